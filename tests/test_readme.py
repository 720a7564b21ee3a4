"""Every `python main.py` / `python -m project.*` command in the README's code blocks, run as written, offline.

A tiny synthetic run stands in for `logs/cifar10/version_0`, so that the commands that evaluate,
export or resume it run for real; the ones that would train on CIFAR-10 or on several GPUs are run
through the real parser with `--print_config` (every flag and value checked, nothing trained).
"""

import importlib
import re
import shlex
import sys

import pytest

from conftest import QUIET, REPO, SYNTHETIC, start_fit, starts_early

COMMAND = re.compile(r"^python (main\.py|-m project\.\w+) ")


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    lines = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.DOTALL)).replace("\\\n", " ")
    commands = [part.split("  #")[0].strip() for line in lines.splitlines() for part in line.split(" && ")]
    return [command for command in commands if COMMAND.match(command)]


def run(argv: list[str], monkeypatch) -> None:
    module, args = (argv[2], argv[3:]) if argv[1] == "-m" else ("project.cli", argv[2:])
    monkeypatch.setattr(sys, "argv", [argv[1], *args])
    try:
        importlib.import_module(module).main()
    except SystemExit as stop:
        assert stop.code in (0, None), f"{' '.join(argv)} exited with {stop.code}"


@starts_early
def readme_dir(tmp_path_factory):
    """A working directory with the repository's configs and a finished run standing in for the cifar10 one (its
    `main.py fit` run as in this process, in a process started with the session)."""
    workdir = tmp_path_factory.mktemp("readme")
    (workdir / "configs").symlink_to(REPO / "configs")
    fit = ["main.py", "fit", "--config", SYNTHETIC, *QUIET, "--trainer.max_steps", "2",
           "--model.scheduler.warmup_steps", "1", "--trainer.logger.init_args.name", "cifar10"]  # fmt: skip
    return start_fit(fit, cwd=workdir)


def test_the_readme_has_commands_to_check():
    assert len(readme_commands()) >= 10


@pytest.mark.parametrize("command", readme_commands())
def test_a_readme_command_runs_as_written(command, readme_dir, monkeypatch):
    monkeypatch.chdir(readme_dir)
    argv = shlex.split(command)
    if "project.search" in command:
        pytest.skip("a search trains many runs; tests/test_search.py runs one on the synthetic data")
    if "small_cnn" in command:  # names a file the README asks you to write
        pytest.skip("tests/test_make_it_yours.py writes the README's SmallCNN and trains it with this command's flags")
    if "project.completion" in command:  # it changes jsonargparse's settings for the whole process
        pytest.skip("tests/test_completion.py writes the script in its own process and completes with it in bash")
    if "logs/cifar10/" not in command:  # it would train on CIFAR-10 (downloads) or on several GPUs
        argv.append("--print_config")
    elif "project.export" in command:  # tests/test_export.py exports for real and checks the artifacts
        argv.append("--print_config")
    run(argv, monkeypatch)
