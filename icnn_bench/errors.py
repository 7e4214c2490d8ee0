"""Errors a user can fix: reported as one line, recorded in result.json, never a traceback wall."""


class ConfigError(ValueError):
    """A configuration value that cannot work (unknown name, impossible size, bad parameter)."""


class DataError(ValueError):
    """Input data that is missing or malformed."""
