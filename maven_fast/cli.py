"""``maven-fast`` command line: one sub-command per module in maven_fast/commands/.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; modules are discovered, so adding a command never edits
this file.
"""
from __future__ import annotations

import argparse
import importlib
import io
import os
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


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe a bad input or set-up: printed as one message, no traceback."""
    from maven_fast.backends import BackendUnavailable
    from maven_fast.config import ConfigError

    errors: list[type[BaseException]] = [BackendUnavailable, ConfigError, FileNotFoundError]
    for module, name in (("maven_fast.data.report", "DataError"), ("maven_fast.train.checkpoint", "CheckpointError"),
                         ("maven_fast.model.inputs", "MavenInputError"),
                         ("maven_fast.encoders.hub", "EncoderUnavailable")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _print_unencodable_as_escapes() -> None:
    """Print a file name's undecodable bytes (``\\udcff``) as an escape, as stderr does,
    rather than fail after the work is done when stdout's encoding is strict."""
    if isinstance(sys.stdout, io.TextIOWrapper) and sys.stdout.errors == "strict":
        sys.stdout.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    _print_unencodable_as_escapes()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except BrokenPipeError:  # e.g. `maven-fast train --print-config | head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except _user_errors() as exc:
        print(f"maven-fast {args.command}: error: {exc}", file=sys.stderr)
        if os.environ.get("MAVEN_FAST_TRACEBACK"):
            raise
        return 2


if __name__ == "__main__":
    sys.exit(main())
