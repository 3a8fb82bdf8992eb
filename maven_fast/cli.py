"""``maven-fast`` command line: one sub-command per module in maven_fast/commands/.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; modules are discovered, so adding a command never edits
this file.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import maven_fast.commands as commands_pkg


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        yield info.name.replace("_", "-"), f"maven_fast.commands.{info.name}"


def build_parser() -> argparse.ArgumentParser:
    from maven_fast import __version__

    parser = argparse.ArgumentParser(
        prog="maven-fast",
        description="maven_fast: fast MAVEN valence-arousal emotion recognition "
        "(training, evaluation, prediction, data tools and benchmarks).",
    )
    parser.add_argument("--version", action="version", version=f"maven_fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in _command_modules():
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
