"""``python -m project.search --config CONFIG --space SPACE --trials N [--study_dir DIR] [CLI flags ...]``."""

import argparse
import sys
from pathlib import Path

from pytorch_lightning.utilities.exceptions import SIGTERMException

from project.errors import UsageError, mistakes_as_one_line


def parse_options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m project.search",
        allow_abbrev=False,
        description="An Optuna study over the flags of `python main.py fit`: each trial is a run of the CLI with "
        "values drawn from --space, pruned on val/acc; the study keeps trials.csv, best.yaml (a config "
        "for `main.py fit --config`) and study.db in its folder, where the trials' runs log too.",
        epilog="Any other flag (e.g. --trainer.max_epochs 3) is passed to every trial. A trial that stops on a "
        "mistake in its drawn values fails and the study goes on; the study ends if its first 3 trials all do. "
        "The same command continues a stopped study.",
    )
    parser.add_argument("--config", action="append", required=True, help="a config of main.py fit; may be repeated")
    parser.add_argument(
        "--space",
        type=Path,
        required=True,
        help="YAML of `<flag name>: {low: .., high: .., log: true}` or `{choices: [..]}` lines",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=20,
        help="finished trials the study should have (default 20); each command tries the missing ones once",
    )
    parser.add_argument("--study_dir", type=Path, help="the study's folder (default logs/search-<space file name>)")
    options, options.flags = parser.parse_known_args(argv)
    if options.trials < 1:
        parser.error(f"--trials must be 1 or more, got {options.trials}")
    options.study_dir = options.study_dir or Path("logs") / f"search-{options.space.stem}"
    return options


def main(argv: list[str] | None = None) -> None:
    """Run the search; a user's mistake ends with one ``error:`` line, as in ``main.py``."""
    options = parse_options(sys.argv[1:] if argv is None else argv)
    with mistakes_as_one_line():
        try:
            from project.search.study import search
        except ModuleNotFoundError as err:
            if err.name != "optuna":
                raise
            raise UsageError('the search needs Optuna: pip install -e ".[search]" (or pip install optuna)') from None
        try:
            search(options)
        except SIGTERMException:  # GracefulStop saved the trial's run and said how to resume it alone
            print(
                "The search stopped; the same command continues it, with a new trial in place of the stopped one.",
                file=sys.stderr,
            )
            raise


if __name__ == "__main__":
    main()
