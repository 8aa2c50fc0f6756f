"""Errors a user can fix. The `engram` command prints their message as one line and exits non-zero."""


class EngramError(Exception):
    """Base class: the message names what is wrong and what is allowed."""


class ConfigError(EngramError):
    """A config key is unknown or a value is not allowed."""


class DataError(EngramError):
    """A data file is missing or malformed (the message names file and line)."""


class RunDirError(EngramError):
    """A run directory is missing, incomplete or belongs to another experiment."""


class NonFiniteLossError(EngramError):
    """The loss became NaN or inf; the last good checkpoint is kept."""
