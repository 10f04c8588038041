"""The one exception family users catch: every message names the file (or argument) and the problem."""


class AsanetError(Exception):
    """A user-facing error: bad input file, bad argument, incompatible artifact."""
