"""The one exception type for bad user input: the CLI prints it on one line and exits 2."""


class BadInput(ValueError):
    """Invalid input from the user (a flag, a file, a config); the message names the problem."""


class BenchWarning(UserWarning):
    """Something the user should know that does not stop the command (runs set aside, folders skipped);
    the CLI prints it on one line."""
