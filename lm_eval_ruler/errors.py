"""One exception hierarchy, so callers can catch everything this plugin raises.

Every message names the fix (the argument to pass, the command to run, the
file to provide), because these errors surface inside long evaluation jobs
where the user cannot step through the code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

#: The exit code of every command for bad input (1 is reserved for a failed gate).
EXIT_BAD_INPUT = 2


class RulerError(Exception):
    """Base of every error this plugin raises."""


class ConfigurationError(RulerError, ValueError):
    """A task, length, profile or metadata value is not valid."""


class TokenizerError(RulerError):
    """The evaluated model's tokenizer is missing or cannot be loaded."""


class BudgetError(RulerError):
    """A prompt cannot fit its length budget, or the served window is too small."""


class DataSourceError(RulerError):
    """An external data file is missing, corrupt or cannot be downloaded."""


class ReportError(RulerError):
    """Results cannot be read or compared (bad folder, corrupt file, mismatched runs).

    The CLI maps it to exit code 2 ("bad input"), distinct from 1 ("gate failed").
    """


def run_reporting_errors(command: Callable[[], int], *, debug: bool = False) -> int:
    """Run a command; this plugin's errors become one ``error:`` line and exit code 2.

    Users meet these errors at the end of long jobs, where a 20-frame traceback hides the one
    line that names the fix; ``--debug`` (``debug=True``) prints the traceback instead.
    """
    try:
        return command()
    except RulerError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        else:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
