"""The one exception family users catch: every message names the file (or argument) and the problem."""


class AsanetError(Exception):
    """A user-facing error: bad input file, bad argument, incompatible artifact."""

    #: Exit status of the command line: 2 for a bad input or argument (the user can fix the call).
    exit_code = 2


class OutputError(AsanetError):
    """Writing an output failed for a reason outside the inputs: no space left, read-only folder, no permission."""

    exit_code = 1
