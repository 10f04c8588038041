"""``asanet-rt``: a thin command line over the library, one subcommand per stage.

Each stage registers its subcommands from a torch-free module; heavy imports happen only when a command runs,
so ``asanet-rt --help`` and the runtime commands never load torch.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from ._version import __version__
from .cli_options import BACKEND_NAMES, backend_help
from .errors import AsanetError
from .process import Terminated, route_gdal_messages, terminate_as_interrupt

#: Modules with a ``register(subparsers)`` function, in the order of the pipeline.
COMMAND_MODULES = (
    "asanet_rt.export.cli",
    "asanet_rt.engines.cli",
    "asanet_rt.runtime_cli",
    "asanet_rt.batch_cli",
    "asanet_rt.bench_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asanet-rt", description="ASANet RGB+SAR land-cover segmentation: checkpoint -> ONNX -> engine -> map.",
        epilog="backends (--backend, bench's MODEL@BACKEND): " + backend_help(BACKEND_NAMES, "by file type")
               + ". Every flag means the same in every command: see the README's 'CLI vocabulary'.",
        allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"asanet-rt {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # a stage not present in this install
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        route_gdal_messages(args.verbose)
        with terminate_as_interrupt():
            return int(args.func(args) or 0)
    except AsanetError as exc:
        print(f"asanet-rt {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        print(f"asanet-rt {args.command}: error: this command needs the Python package {exc.name!r}; "
              f"see the README's install section for the extra that provides it", file=sys.stderr)
        return 2
    except Terminated as exc:
        print(f"asanet-rt {args.command}: terminated ({exc})", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"asanet-rt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
