"""``facesynth …`` command line: one subcommand per job, plus ``demo``.

Each technique's commands live in their own module (``facesynth/cli/<technique>.py``) as ``add`` (arguments) and
``run`` (a thin layer over the library) functions, listed in that module's ``COMMANDS``. Errors that are the
input's fault (FacesynthError) print one line and exit with status 2; anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import argparse
import re
import sys
import warnings

from facesynth.cli import demo, evaluate, extract, figures, generate, lipsync, reenact, swap, verify, weights
from facesynth.errors import FacesynthError

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS = {}
for _module in (extract, demo, swap, reenact, lipsync, generate, weights, evaluate, figures, verify):
    COMMANDS.update(_module.COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    from facesynth import __version__

    parser = argparse.ArgumentParser(prog="facesynth", description="Face synthesis research suite.")
    parser.add_argument("--version", action="version", version=f"facesynth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def _flags(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """Python argument names (``max_frames``) → this command's flags (``--max-frames``), for the names with an
    underscore: the library's messages name its arguments, a shell user typed flags."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    flags = {}
    for action in sub._actions:
        long = [o for o in action.option_strings if o.startswith("--")]
        if long and "_" in action.dest:
            flags[action.dest] = long[0]
        for o in long:                    # also the library's name for a flag whose dest differs (--swap-iterations)
            name = o[2:].replace("-", "_")
            if "_" in name:
                flags.setdefault(name, o)
    return flags


def _name_flags(message: str, flags: dict[str, str]) -> str:
    for name, flag in flags.items():
        message = re.sub(rf"(?<![\w/.-]){re.escape(name)}(?![\w/])", flag, message)
    return message


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as one line for a user: the category and the message, never a source line of facesynth."""
    text = " ".join(str(message).split())
    return f"facesynth: warning ({category.__name__}): {text}\n"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        return COMMANDS[args.command][1](args)
    except FacesynthError as e:
        message = _name_flags(" ".join(str(e).split()), _flags(parser, args.command))
        print(f"facesynth: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facesynth: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    raise SystemExit(main())
