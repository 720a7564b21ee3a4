"""A user's mistake, and how ``main.py`` shows it: one ``error:`` line. Anything else is a bug and keeps its
traceback."""

import os
import pickle
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import NoReturn

import torch
from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException


class UsageError(ValueError):
    """A mistake in what was asked for: a setting, a path, the data.

    A ``ValueError``, so that code using the template's parts outside the CLI catches it as usual.
    ``setting`` names the setting at fault where a caller adds context to the message.
    """

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


# What a user can get wrong: the template's own checks, Lightning's configuration checks, the file
# system (a missing file, a full disk), a package that a configured class needs and that is not installed,
# and a diverging run. Anything else is a bug, in the template or in the user's own code, and keeps its
# traceback.
MISTAKES = (UsageError, MisconfigurationException, OSError, FloatingPointError, ModuleNotFoundError)


@contextmanager
def mistakes_as_one_line() -> Iterator[None]:
    """Around a run: a mistake exits with ``error: <message>`` (status 1), a bug is re-raised."""
    try:
        yield
    except SIGTERMException:  # GracefulStop saved a checkpoint and printed how to resume
        sys.exit(128 + signal.SIGTERM)
    except pickle.UnpicklingError as err:
        _exit_with(
            "the checkpoint holds more than weights (objects of other classes) and was not loaded: loading "
            "it could run code. If you trust its source, pass --weights_only false",
            err,
        )
    except Exception as err:
        mistake = mistake_in(err)
        if mistake is None and isinstance(err, RuntimeError) and _lost_another_process(err):
            _exit_with(
                "another process of this job failed and this one stopped with it; its error is printed above", err
            )
        _tell_other_processes()
        if isinstance(mistake, ModuleNotFoundError):
            _exit_with(_missing_package(mistake), err)
        if mistake is not None:
            _exit_with(str(mistake), err)
        raise


def mistake_in(err: BaseException | None) -> BaseException | None:
    # jsonargparse raises its own ValueError from the error of a class it could not build: follow the cause.
    while err is not None and not isinstance(err, MISTAKES):
        err = err.__cause__
    return err


def _missing_package(err: ModuleNotFoundError) -> str:
    # Lightning's optional parts say which requirement and how to install it; a plain import names the module.
    if err.name is None:
        return str(err)
    return f"{err} (a package that the configured classes need): pip install {err.name.split('.')[0]}"


def _exit_with(message: str, err: BaseException) -> NoReturn:
    if os.environ.get("TRACEBACK"):
        raise err
    if _distributed():
        message = f"(rank {torch.distributed.get_rank()}) {message}"
    sys.exit(f"error: {message}\n(set TRACEBACK=1 to see where it was raised)")


# A failing process of a distributed job leaves this key in the job's store before it exits, so that
# the others can tell "my peer is gone" from a bug of their own: gloo's lost-peer error is a plain
# RuntimeError.
FAILED_KEY = "project/a-process-failed"


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _tell_other_processes() -> None:
    if _distributed():
        try:
            _default_store().set(FAILED_KEY, str(torch.distributed.get_rank()))
        except RuntimeError:
            pass  # the store's host has exited: the others find it gone


def _lost_another_process(err: RuntimeError) -> bool:
    if not _distributed():
        return False
    if isinstance(err, torch.distributed.DistError):
        return True
    try:
        return _default_store().check([FAILED_KEY])
    except RuntimeError:  # the store lived in rank 0's process, which has exited
        return True


def _default_store() -> torch.distributed.Store:
    store = torch.distributed.distributed_c10d._get_default_store()
    store.set_timeout(timedelta(seconds=10))  # a failing job's store need not wait 30 minutes
    return store
