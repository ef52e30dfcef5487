"""The argparse wiring the client commands share: server options (--url, --api-key), --timeout,
and `command`, which turns a CLIError or an interrupt into the documented exit status.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable

from client.http import DEFAULT_URL, KEY_ENV, URL_ENV, CLIError
from client.output import err


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except CLIError as exc:
            for line in str(exc).splitlines() or [""]:
                err(f"error: {line}")
            return exc.exit_code
        except BrokenPipeError:
            # stdout closed early (`replayft jobs logs ID --follow | head`): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 141

    return run


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def timeout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up waiting after this long (exit 1); default: wait as long as it takes",
    )


def server_options() -> argparse.ArgumentParser:
    """--url and --api-key, accepted both before and after the subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("server")
    # SUPPRESS: an option given to `jobs` is not overwritten by the default of `jobs list`
    group.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"server URL (default: ${URL_ENV}, else {DEFAULT_URL})",
    )
    group.add_argument(
        "--api-key",
        default=argparse.SUPPRESS,
        help=f"API key (default: ${KEY_ENV}; prefer the variable, arguments show in `ps`)",
    )
    return parent
