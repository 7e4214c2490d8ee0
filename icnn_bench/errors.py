"""Errors a user can fix: reported as one line, recorded in result.json, never a traceback wall."""


class ConfigError(ValueError):
    """A configuration value that cannot work (unknown name, impossible size, bad parameter)."""


class DataError(ValueError):
    """Input data that is missing or malformed."""


class Diverged(ArithmeticError):
    """Training cannot go on (non-finite importance weights, a potential that is not convex):
    the run stops as `diverged`, with this message as its cause."""
