"""The error every option check raises, apart from the checks that raise it."""


class OptionError(ValueError):
    """A bad option value; the message is one line that says what to do."""
