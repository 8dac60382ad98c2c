"""Errors a user can act on.

Every error the host raises on purpose is an :class:`LrfrError`; the CLI prints its message and exits with
status 1 without a traceback. Messages name the file, the dotted path and the fix.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class LrfrError(Exception):
    """Base of every error that is the user's to fix (bad recipe, unknown plugin, bad data)."""


class UnknownKindError(LrfrError):
    """A plugin kind that does not exist."""


class UnknownPluginError(LrfrError):
    """No plugin of this kind has that name."""


class DuplicatePluginError(LrfrError):
    """Two providers registered the same kind and name."""


class ParamsError(LrfrError):
    """One or more parameters of a plugin (or of a host section) are wrong."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None):
        super().__init__(message)
        #: (parameter name, problem) pairs, so callers can re-prefix them with a recipe path.
        self.problems = problems or []


class RecipeError(LrfrError):
    """A recipe that cannot be read or validated."""


class RunDirError(LrfrError):
    """An output directory that already holds a run, or a run directory that cannot be resumed."""


class DataError(LrfrError):
    """Input data in the wrong format or shape."""


class NonFiniteLossError(LrfrError):
    """The training or fine-tuning loss became NaN or infinite (the message names the setting to lower)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return " Did you mean 'x'?" for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


class WriteError(LrfrError, OSError):
    """A file that cannot be written (full disk, quota, read-only or forbidden folder).

    Also an OSError with the original ``errno`` and ``filename`` (the target, never a temp file), so callers that
    catch OSError keep working; ``str()`` is the one-line message of :mod:`lrfr_plugins.write_errors`.
    """

    def __init__(self, path, code: int | None, reason: str, message: str):
        super().__init__(code, reason, str(path))
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return type(self), (self.filename, self.errno, self.strerror, self.message)


class LrfrWarning(UserWarning):
    """Something valid that probably does not do what the user meant; the CLI prints it as one 'Warning: ...' line."""
