"""The ``integration-worker`` console script: parse the command line, then load settings and
logging and run the one command asked for until it ends or a signal arrives.

Invariants:
- nothing heavy is imported before the arguments are parsed (``supervisor.command_line`` is
  light), so ``--help`` and a usage error cost milliseconds; the command's own module is loaded
  after parsing (``Handler.load``);
- a command's refusal (``ConfigError``: exit 2, ``OperatorError``: its exit code) is one line on
  stderr once everything it opened was closed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TextIO, cast

from supervisor.command_line import build_parser


async def _until_signalled(main: Callable[[], Awaitable[None]]) -> None:
    """Run ``main`` until it returns or SIGINT/SIGTERM arrives, then unwind cleanly."""
    import signal  # noqa: PLC0415 - after parsing, like everything this module runs

    import anyio  # noqa: PLC0415
    import structlog  # noqa: PLC0415

    log = structlog.get_logger("supervisor.cli")
    async with anyio.create_task_group() as group:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("stopping", signal=signal.Signals(signum).name)
                    group.cancel_scope.cancel()
                    return

        group.start_soon(watch_signals, name="signals")
        await main()
        group.cancel_scope.cancel()


class _BelowStatusLine:
    """stderr for a terminal showing the demo's status line: each log record clears it first."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write("\r\x1b[2K" + text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


def _log_stream(args: argparse.Namespace) -> TextIO:
    if args.command == "demo" and sys.stdout.isatty() and sys.stderr.isatty():
        return cast(TextIO, _BelowStatusLine(sys.stderr))
    return sys.stderr


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    # Imported only now: `--help` and usage errors have exited above.
    import logging  # noqa: PLC0415

    import anyio  # noqa: PLC0415

    from config.logs import configure_logging  # noqa: PLC0415
    from config.redact import register_secrets  # noqa: PLC0415
    from config.settings import ConfigError, load_settings  # noqa: PLC0415
    from operations.accounts import OperatorError  # noqa: PLC0415

    overrides: dict[str, Any] = {}
    for name in ("log_format", "log_level"):
        if getattr(args, name, None) and f"IW_{name.upper()}" not in os.environ:
            overrides[name] = getattr(args, name)
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.log_format, stream=_log_stream(args))
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # chatty at INFO
    register_secrets(settings.secret_values(), pinned=True)  # never evicted
    exit_code = 0
    try:
        command = args.run.load()
        anyio.run(_until_signalled, lambda: command(settings, args))
    # A command's own refusal arrives wrapped by the task group; by now every service it
    # opened has been closed by the unwinding, so one line and an exit code is all that is left.
    except* ConfigError as group:
        print(group.exceptions[0], file=sys.stderr)
        exit_code = 2
    except* OperatorError as group:
        error = group.exceptions[0]
        assert isinstance(error, OperatorError)
        print(error, file=sys.stderr)
        exit_code = error.exit_code
    if exit_code:
        raise SystemExit(exit_code)


if __name__ == "__main__":
    main()
