"""The ``astra`` command line: one program, one subcommand per module in this package.

Every module ``astra/cli/<name>.py`` that defines ``register(subparsers)`` adds its
subcommand(s); ``register`` must call ``subparsers.add_parser(...)`` and
``parser.set_defaults(func=run)`` where ``run(args) -> int`` is the exit status.
Modules are imported lazily enough that ``astra --help`` stays fast: heavy imports
(torch, datasets) belong inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from astra.errors import UserError  # re-exported: the subcommand modules raise it

__all__ = ["UserError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from astra import __version__

    parser = argparse.ArgumentParser(
        prog="astra", description="Speech recognition with text injection (ASTRA + Aligner-Encoders)."
    )
    parser.add_argument("--version", action="version", version=f"astra {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"astra {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
