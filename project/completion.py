"""Tab completion of main.py's subcommands, flags and choices in bash, written by jsonargparse from the CLI's own
parser: `python -m project.completion > completion.bash`, then `. ./completion.bash` and
`./main.py fit --model.opt<TAB>`. Write it again after adding a class or a setting."""

import sys

import torch
from jsonargparse import set_parsing_settings
from pytorch_lightning import LightningModule

from project.cli import CLI
from project.errors import UsageError, mistakes_as_one_line


class CompletionCLI(CLI):
    """The project's CLI, named ``main.py`` (the command that bash completes), printing its completion script."""

    def __init__(self) -> None:
        # jsonargparse completes a class-typed setting by walking every subclass's signature, recursively. Two base
        # classes make that walk endless in practice (minutes, GBs): nn.Module (hundreds of torch layers, each with
        # module-typed arguments) and Tensor (a tensor argument whose type has tensor arguments, without end). So
        # `--model.network` offers no class names; LightningModule's subclasses (`--model`) still complete.
        set_parsing_settings(
            add_print_completion_argument=True,
            subclasses_disabled=[torch.nn.Module, torch.Tensor],
            subclasses_enabled=[LightningModule],
        )
        super().__init__(args=["--print_completion", "shtab-bash"])

    def init_parser(self, **kwargs):
        kwargs["prog"] = "main.py"
        return super().init_parser(**kwargs)


def main(argv: list[str] | None = None) -> None:
    """Print the script; a user's mistake ends with one ``error:`` line, as in ``main.py``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):
        print(__doc__)
        return
    with mistakes_as_one_line():
        if argv not in ([], ["bash"]):
            raise UsageError(f"python -m project.completion {' '.join(argv)}: the only shell offered is bash")
        try:
            import shtab  # noqa: F401
        except ModuleNotFoundError:
            raise UsageError('completion needs shtab: pip install -e ".[completion]"') from None
        CompletionCLI()


if __name__ == "__main__":
    main()
