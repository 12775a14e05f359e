"""The one exception type users see: a message that says what is wrong and what to do."""


class SlimdeployError(ValueError):
    """Bad input or an impossible request. The CLI prints it on one line and exits with code 2."""
