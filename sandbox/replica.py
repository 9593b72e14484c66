"""``python -m sandbox.replica <integration-worker arguments>``: the production command with the
sandbox's fault points installed from the environment (``sandbox.faults``).

The real-process crash and split-brain tests start replicas this way; the production CLI knows
nothing of faults. Everything else (settings, logging, the replica itself) is the production
entry point, unchanged.
"""

from __future__ import annotations

import sys

from sandbox.faults import install_from_environment
from supervisor.cli import main


def run(argv: list[str]) -> None:
    installed = install_from_environment()
    if installed:
        # The CLI configures logging later, so this one line goes to stderr directly.
        print(f"sandbox.replica: fault injection on ({'; '.join(installed)})", file=sys.stderr)
    main(argv)


if __name__ == "__main__":
    run(sys.argv[1:])
