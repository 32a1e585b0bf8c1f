"""User-facing errors: each carries one line saying what is wrong and what to do.

The CLI prints ``str(error)`` alone and exits with status 2; no traceback reaches the user.
"""

from __future__ import annotations


class MasqError(ValueError):
    """Bad input or state the user can fix (one-line message)."""


class SettingsError(MasqError):
    """An option outside its accepted values."""


class CheckpointError(MasqError):
    """A resume checkpoint that is missing, corrupt or from a different run."""


class OutputDirError(MasqError):
    """The output directory already holds something we must not overwrite."""
