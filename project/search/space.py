"""A search space file: the CLI's flag names, each with a range or a list of choices, as Optuna distributions."""

import difflib
from pathlib import Path

import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from project.errors import UsageError

RANGE_FIELDS = {"low", "high", "log", "step"}
FORM = "{low: <number>, high: <number>} (optional log: true, step: <number>) or {choices: [<value>, ...]}"


def load_space(path: Path) -> dict[str, BaseDistribution]:
    """``{flag name: distribution}``; integer bounds make an integer range."""
    if not path.is_file():
        raise UsageError(f"--space {path}: no such file")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"--space {path} is not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(content, dict) or not content:
        raise UsageError(
            f"--space {path} names no flags: a space is YAML of `<flag name>: {FORM}` lines, "
            "e.g. `model.optimizer.init_args.lr: {low: 1.0e-3, high: 0.1, log: true}`"
        )
    return {str(key): _distribution(entry, f"--space {path}: {key}") for key, entry in content.items()}


def _distribution(entry, where: str) -> BaseDistribution:
    if not isinstance(entry, dict) or not (set(entry) == {"choices"} or {"low", "high"} <= set(entry) <= RANGE_FIELDS):
        raise UsageError(f"{where}: expected {FORM}, got {entry!r}")
    if "choices" in entry:
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices or not all(_is_scalar(choice) for choice in choices):
            raise UsageError(
                f"{where}: choices must be a non-empty list of numbers, words, true/false or null, got {choices!r}"
            )
        return CategoricalDistribution(choices)
    low, high = _number(entry["low"], where), _number(entry["high"], where)
    step = None if entry.get("step") is None else _number(entry["step"], where)
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise UsageError(f"{where}: log must be true or false, got {log!r}")
    try:
        if all(isinstance(value, int) for value in (low, high, 1 if step is None else step)):
            return IntDistribution(low, high, log=log, step=1 if step is None else step)
        return FloatDistribution(low, high, log=log, step=step)
    except ValueError as err:  # Optuna's own checks: low <= high, log needs low > 0, not both log and step
        raise UsageError(f"{where}: {err}") from None


def _number(value, where: str):
    if isinstance(value, str):  # YAML reads 1e-3 (no dot) as text
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{where}: low, high and step must be numbers, got {value!r}")
    return value


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def setting(flag: str) -> str:
    """The setting a flag sets: ``model.optimizer.init_args.lr`` and ``model.optimizer.lr`` are the same one."""
    return ".".join(part for part in flag.removeprefix("--").split("=", 1)[0].split(".") if part != "init_args")


def check_settings(space: dict[str, BaseDistribution], settings: list[str], path: Path) -> None:
    """Each key of the space must set one of ``settings`` (the config's, ``init_args`` left out) or choose a class."""
    for key in space:
        wanted = setting(key)
        if not any(name == wanted or name.startswith(f"{wanted}.") for name in settings):
            close = difflib.get_close_matches(wanted, settings, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(
                f"--space {path}: {key} is not a setting of this config{hint}; "
                "`python main.py fit --config <config> --print_config` lists them"
            )


def as_flags(params: dict) -> list[str]:
    """``["--model.optimizer.init_args.lr", "0.0123", ...]``: values written as the CLI reads them."""
    return [arg for key, value in params.items() for arg in (f"--{key}", _as_text(value))]


def _as_text(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
