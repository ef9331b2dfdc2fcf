"""How a command ends on a failure: in one line, not in a traceback. Every ``negotiate``
command and every ``python -m benchmarks...`` entry point ends through :func:`run_main`.

    if __name__ == "__main__":
        sys.exit(run_main("python -m benchmarks.throughput", main))
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from llm.interface import BackendError


def run_main(prog: str, main: Callable[[], Any]) -> int:
    """Run a command's ``main()`` and return its exit status (``main``'s own, 0 for None):
    2 and one line for bad input (a wrong value, key or type, a missing file), 1 and one line
    naming the cause for a model or server that could not answer (e.g. a server that is
    down), 130 for Ctrl-C."""
    try:
        status = main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, TypeError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except BackendError as error:
        cause = " ".join(str(error).split())
        print(
            f"{prog}: model backend failed: {cause}. Check that the model or server named in "
            "the spec is available (server running, URL and API key right), then rerun; "
            "commands that resume keep what they had finished.",
            file=sys.stderr,
        )
        return 1
    return status if isinstance(status, int) else 0
