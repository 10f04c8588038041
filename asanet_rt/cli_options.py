"""One command-line vocabulary for every ``asanet-rt`` subcommand: value parsers, shared options, deprecations.

Every flag name means one thing in every command that has it (README, "CLI vocabulary"). Sizes: ``--tile`` and
``--batch`` take a number where one size is used, a comma list where several are timed (``bench``) and a range
``N | MIN:MAX | MIN:OPT:MAX`` where an ONNX or engine profile is set (``export``, ``build``), all parsed here.
Importing this module loads no rasterio and no backend, so ``asanet-rt --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, NamedTuple, Sequence

from .backends.registry import ALIASES, BACKENDS

#: Canonical backend names (in the order ``--help`` lists them) and their other spellings: the registry's table.
BACKEND_NAMES: tuple[str, ...] = tuple(spec.name for spec in BACKENDS)
BACKEND_ALIASES: dict[str, str] = dict(ALIASES)


def command(sub: argparse._SubParsersAction, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand parser with the project's settings: no abbreviated flags (``--sar-scal`` is an error)."""
    return sub.add_parser(name, allow_abbrev=False, **kwargs)


def warn_deprecated(old: str, new: str) -> None:
    """One line on stderr for a spelling kept for one release."""
    print(f"asanet-rt: warning: {old} is deprecated; use {new}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------ numbers
def _number(kind: Callable[[str], Any], low: float | None, high: float | None, what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {what}") from None
        if (low is not None and value < low) or (high is not None and value > high) or value != value:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {what}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, 1, None, "an integer >= 1")
non_negative_int = _number(int, 0, None, "an integer >= 0")
positive_float = _number(float, sys.float_info.min, None, "a number > 0")
non_negative_float = _number(float, 0.0, None, "a number >= 0")
fraction = _number(float, 0.0, 1.0, "a number from 0 to 1")


def threads(text: str) -> int:
    """``--threads``: 0 (the default: physical cores) or a positive count."""
    return _number(int, 0, None, "a thread count >= 0 (0: physical cores)")(text)


def number_or_none(text: str) -> float:
    """A float, NaN included (nodata values)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


# ------------------------------------------------------------------------------------------------ sizes
class SizeRange(NamedTuple):
    """A profile range; ``opt`` None when not given."""
    min: int
    opt: int | None
    max: int


def parse_range(text: str) -> SizeRange:
    """``N`` -> N:N:N, ``MIN:MAX`` -> MIN:(opt None):MAX, ``MIN:OPT:MAX``: the one range syntax."""
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N, MIN:MAX or MIN:OPT:MAX") from None
    if len(parts) == 1:
        parts = parts * 3
    elif len(parts) == 2:
        parts = [parts[0], None, parts[1]]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N, MIN:MAX or MIN:OPT:MAX")
    low, opt, high = parts
    if low < 1 or high < low or (opt is not None and not low <= opt <= high):
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= MIN <= OPT <= MAX")
    return SizeRange(low, opt, high)


def int_list(text: str) -> tuple[int, ...]:
    """``1,4,8`` -> (1, 4, 8): sizes that are each timed (``bench``)."""
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,4,8") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers >= 1, e.g. 1,4,8")
    return values


def names(text: str) -> tuple[str, ...]:
    """``red, green,blue`` -> ("red", "green", "blue")."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def band_numbers(text: str) -> tuple[int, ...]:
    """``--optical-bands``: 1-based band numbers of the optical file, e.g. ``4,3,2``."""
    try:
        bands = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected 1-based band numbers of the file, e.g. 4,3,2 (band names such as red,green,blue "
            f"belong to `asanet-rt export --input-bands`)") from None
    if not bands or min(bands) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: band numbers start at 1")
    return bands


# ------------------------------------------------------------------------------------------------ backends
def backend_help(allowed: Sequence[str], default_meaning: str) -> str:
    """The one backend list ``--help`` prints, restricted to what a command can run."""
    listed = []
    for name in BACKEND_NAMES:
        if name in allowed:
            aliases = [a for a, n in BACKEND_ALIASES.items() if n == name]
            listed.append(f"{name} ({', '.join(aliases)})" if aliases else name)
    return f"auto ({default_meaning}) or one of: {'; '.join(listed)}"


def backend_name(allowed: Sequence[str]) -> Callable[[str], str]:
    """An argparse type: a backend name or alias -> its canonical name (``auto`` stays ``auto``)."""
    def parse(text: str) -> str:
        name = text.strip().lower()
        name = BACKEND_ALIASES.get(name, name)
        if name == "auto" or name in allowed:
            return name
        raise argparse.ArgumentTypeError(f"{text!r}: choose auto or one of {', '.join(allowed)}")

    parse.__name__ = "backend"
    return parse


def add_backend_option(p: argparse.ArgumentParser, allowed: Sequence[str], default_meaning: str) -> None:
    """``--backend`` with the canonical names, aliases accepted."""
    p.add_argument("--backend", default="auto", type=backend_name(allowed), metavar="NAME",
                   help="backend: " + backend_help(allowed, default_meaning))


def add_engine_trust_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--allow-engine-host-code`` for every command that opens engines (classify, batch, bench, eval, inspect)."""
    p.add_argument("--allow-engine-host-code", action="store_true",
                   help="run a version-compatible engine's embedded host code (TensorRT's lean runtime inside the "
                        "file): only for engines from a source you trust")


# ------------------------------------------------------------------------------------------------ output
class _DeprecatedFlag(argparse.Action):
    """A store_true alias that warns (``--no-progress`` for ``--quiet``)."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # noqa: ANN001
        warn_deprecated(option_string or "", self.new)
        setattr(namespace, self.dest, True)


def add_quiet_option(p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "progress") -> None:
    """``-q/--quiet`` (and the old ``--no-progress``, which warns)."""
    p.add_argument("-q", "--quiet", action="store_true", help=f"no {what} on stderr")
    p.add_argument("--no-progress", dest="quiet", action=_DeprecatedFlag, new="-q/--quiet", default=False,
                   help="deprecated spelling of --quiet")


def add_json_options(p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str,
                     file_form: bool = False) -> None:
    """``--json`` prints ``what`` as JSON on stdout; ``--json-out PATH`` writes it to a file.

    ``file_form``: ``--json PATH`` (the old spelling in bench and eval) is still accepted, with a warning; a value
    that does not end in .json is not a path but the command's next positional, given back by ``json_request``.
    """
    if file_form:
        p.add_argument("--json", nargs="?", const=True, default=False, metavar="PATH",
                       help=f"print {what} as JSON on stdout (--json PATH is the deprecated form of --json-out)")
    else:
        p.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout")
    if file_form:
        p.add_argument("--json-out", metavar="PATH", default=None, help=f"write {what} as JSON to PATH")


def json_request(args: argparse.Namespace) -> tuple[bool, str | None, str | None]:
    """(print JSON to stdout?, file to write or None, a positional ``--json`` swallowed or None)."""
    value, out, stray = args.json, getattr(args, "json_out", None), None
    if isinstance(value, str):
        if value.lower().endswith(".json"):
            warn_deprecated(f"--json {value}", f"--json-out {value}")
            return False, out or value, None
        value, stray = True, value
    return bool(value), out, stray
