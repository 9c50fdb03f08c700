"""The root of trimtab's user-facing errors: the CLI prints their message, no traceback."""


class TrimtabError(Exception):
    """An error whose message alone tells the user what is wrong and what to do."""
