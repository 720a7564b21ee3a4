"""The one type of a user's mistake: ``main.py`` prints it as one ``error:`` line; anything else is a bug and
keeps its traceback."""

from typing import Optional


class UsageError(ValueError):
    """A mistake in what was asked for: a setting, a path, the data.

    A ``ValueError``, so that code using the template's parts outside the CLI catches it as usual.
    ``setting`` names the setting at fault where a caller adds context to the message.
    """

    def __init__(self, message: str, setting: Optional[str] = None) -> None:
        super().__init__(message)
        self.setting = setting
