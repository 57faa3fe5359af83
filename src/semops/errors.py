"""The one exception type the stages and the CLI turn into a clear message and exit code 1."""


class SemopsError(Exception):
    """A problem with input, config or environment that the user can fix; the message says how."""


class ConfigError(SemopsError):
    """A params value that fails validation; the message names the key path and the value."""
