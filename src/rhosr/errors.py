"""The errors the command line maps to a one-line message and exit status 2."""


class InputError(ValueError):
    """A problem with user input; ``str(err)`` is a one-line message."""


class StoreError(ValueError):
    """A store that is missing, of another format, or damaged."""


class BankError(StoreError):
    """A bank that is missing, damaged, or an add that is refused."""
