"""The one exception type for bad user input: the CLI prints it on one line and exits 2."""


class BadInput(ValueError):
    """Invalid input from the user (a flag, a file, a config); the message names the problem."""
