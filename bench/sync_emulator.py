"""The sync benchmark's Google side: the Google emulator plus a small bench control server that
seeds users, makes the people's edits, counts events.list calls per calendar, and reports.

It runs inline (``EmulatorHost`` in the caller's loop) or as a child process
(``python -m bench.sync_emulator``: prints one JSON line of its URLs, serves until its stdin
closes), so the emulator's CPU can be kept off the replica's event loop. The harness speaks the
same HTTP to it either way.

Invariants:
- edits go through the emulator's control object, as a person in Google's UI would: they bump
  the change log and fire push notifications exactly like API writes;
- an edit's time is taken *before* the emulator applies it (it never undercounts a lag), and
  each edit is journaled with the etag it produced, so its commit is matched exactly;
- every edit changes something (a new event, or a title never used before), so each one has
  a change row to be matched with;
- list calls are counted at the emulator's own fault hook (every non-control request passes it),
  without changing emulator code; only ``GET .../calendars/<id>/events`` counts;
- everything started here (emulator, bench server, edit task) is closed on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web

from sandbox.emulators.google import GoogleEmulator
from sandbox.emulators.google.api import PREFIX
from sandbox.emulators.shared.faults import FaultBook, Fired

_LIST_SUFFIX = "/events"
_CALENDARS = PREFIX + "calendars/"
_CHILD_START_S = 30.0
_CHILD_STOP_S = 10.0
_Edit = tuple[str, str, str, float]  # (email, event id, etag, time.time() before the edit)


class CountingFaults:
    """Wraps the emulator's fault book to count list calls per calendar (then delegates)."""

    def __init__(self, inner: FaultBook) -> None:
        self._inner = inner
        self.list_calls: Counter[str] = Counter()

    def fire(self, method: str, path: str) -> Fired:
        if method == "GET" and path.startswith(_CALENDARS) and path.endswith(_LIST_SUFFIX):
            calendar = path[len(_CALENDARS) : -len(_LIST_SUFFIX)]
            if "/" not in calendar:
                self.list_calls[calendar] += 1
        return self._inner.fire(method, path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _timed(title: str, rng: random.Random) -> dict[str, Any]:
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(
        hours=rng.randint(-48, 24 * 30)
    )
    return {
        "summary": title,
        "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": (start + timedelta(minutes=30)).isoformat()},
    }


class EmulatorHost:
    """The emulator, the bench routes and the people; use as ``async with``."""

    def __init__(self) -> None:
        self.emulator = GoogleEmulator("127.0.0.1", 0)
        self.faults = CountingFaults(self.emulator.backend.faults)
        self.emulator.backend.faults = self.faults  # type: ignore[assignment]
        self.rng = random.Random(5)
        self.events: dict[str, list[str]] = {}  # email -> ids of its single events
        self.journal: list[_Edit] = []
        self.errors = 0
        self._titles = 0
        self._people: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.bench_url = ""

    async def __aenter__(self) -> EmulatorHost:
        await self.emulator.start()
        try:
            app = web.Application()
            app.router.add_post("/setup", self._setup)
            app.router.add_post("/edits", self._start_edits)
            app.router.add_get("/edits", self._edits)
            app.router.add_post("/burst", self._burst)
            app.router.add_get("/list_calls", self._list_calls)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", 0).start()
            self.bench_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the people, the bench server and the emulator (idempotent)."""
        if self._people is not None:
            self._people.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._people
            self._people = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        await self.emulator.close()

    def urls(self) -> dict[str, str]:
        """Where the harness and the replica's client reach this host."""
        return {
            "api_base_url": self.emulator.api_base_url,
            "token_uri": self.emulator.token_uri,
            "bench_url": self.bench_url,
        }

    # -- the people -------------------------------------------------------------------------

    def _title(self) -> str:
        self._titles += 1
        return f"bench edit {self._titles}"

    def edit(self, email: str) -> _Edit:
        """One person's edit: create an event, or rename one of theirs to a new title."""
        control = self.emulator.control
        ids = self.events[email]
        at = time.time()
        if not ids or self.rng.random() < 0.5:
            body = control.create_event(email, _timed(self._title(), self.rng))
            ids.append(str(body["id"]))
        else:
            body = control.update_event(email, self.rng.choice(ids), {"summary": self._title()})
        return email, str(body["id"]), str(body["etag"]), at

    async def _run_people(self, emails: list[str], edits_per_s: float, duration_s: float) -> None:
        """Edits at a steady rate on a fixed schedule (a late tick catches up, never drifts)."""
        started = time.monotonic()
        total = int(edits_per_s * duration_s)
        for i in range(total):
            delay = started + i / edits_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                self.journal.append(self.edit(self.rng.choice(emails)))
            except Exception:  # an edit the emulator refuses is counted, never fatal
                self.errors += 1

    # -- routes -----------------------------------------------------------------------------

    async def _setup(self, request: web.Request) -> web.Response:
        body = await request.json()
        control = self.emulator.control
        control.add_client(body["client_id"], body["client_secret"])
        for email, refresh_token in body["users"]:
            control.add_user(email, body["client_id"], refresh_token=refresh_token)
            self.events[email] = [
                str(control.create_event(email, _timed("seeded", self.rng))["id"])
                for _ in range(int(body["events_per_user"]))
            ]
        return web.Response(status=204)

    async def _start_edits(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self._people is not None and not self._people.done():
            raise web.HTTPConflict(text="edits already running")
        self.journal, self.errors = [], 0
        self._people = asyncio.get_running_loop().create_task(
            self._run_people(list(self.events), float(body["edits_per_s"]), body["duration_s"]),
            name="bench.people",
        )
        return web.Response(status=202)

    async def _edits(self, _request: web.Request) -> web.Response:
        running = self._people is not None and not self._people.done()
        body = {"running": running, "edits": self.journal, "errors": self.errors}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _burst(self, request: web.Request) -> web.Response:
        """``count`` renames of one event back to back: ``count`` notifications at once."""
        body = await request.json()
        email = body["email"]
        event_id = self.events[email][0]
        edit: _Edit | None = None
        for _ in range(int(body["count"])):
            at = time.time()
            updated = self.emulator.control.update_event(
                email, event_id, {"summary": self._title()}
            )
            edit = (email, event_id, str(updated["etag"]), at)
        return web.Response(body=orjson.dumps(edit), content_type="application/json")

    async def _list_calls(self, request: web.Request) -> web.Response:
        return web.json_response({"count": self.faults.list_calls[request.query["calendar"]]})


def _edit(item: Any) -> _Edit:
    email, event_id, etag, at = item
    return str(email), str(event_id), str(etag), float(at)


class EmulatorLink:
    """The harness's side: where the emulator is, and the bench routes over HTTP."""

    def __init__(self, urls: dict[str, str], http: aiohttp.ClientSession) -> None:
        self.api_base_url = urls["api_base_url"]
        self.token_uri = urls["token_uri"]
        self._bench = urls["bench_url"]
        self._http = http

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with self._http.request(method, self._bench + path, json=body) as response:
            response.raise_for_status()
            if response.content_type != "application/json":
                return None
            return await response.json()

    async def setup(
        self, client_id: str, secret: str, users: list[tuple[str, str]], events_per_user: int
    ) -> None:
        """Register the OAuth client and every user with its refresh token and events."""
        body = {"client_id": client_id, "client_secret": secret, "users": users}
        await self._call("POST", "/setup", body | {"events_per_user": events_per_user})

    async def start_edits(self, edits_per_s: float, duration_s: float) -> None:
        """Start the people: ``edits_per_s`` over ``duration_s`` across every user."""
        await self._call("POST", "/edits", {"edits_per_s": edits_per_s, "duration_s": duration_s})

    async def edits(self) -> tuple[bool, list[_Edit], int]:
        """(still running, the edits journaled so far, edits refused)."""
        body = await self._call("GET", "/edits")
        return bool(body["running"]), [_edit(e) for e in body["edits"]], int(body["errors"])

    async def burst(self, email: str, count: int) -> _Edit:
        """``count`` back-to-back renames of one of ``email``'s events; the last edit."""
        edit = await self._call("POST", "/burst", {"email": email, "count": count})
        return _edit(edit)

    async def list_calls(self, calendar_id: str) -> int:
        """events.list calls the emulator served for ``calendar_id`` so far."""
        body = await self._call("GET", f"/list_calls?calendar={quote(calendar_id)}")
        return int(body["count"])


@contextlib.asynccontextmanager
async def open_emulator(
    http: aiohttp.ClientSession, *, child_process: bool
) -> AsyncIterator[EmulatorLink]:
    """The emulator host inline, or in a child process (stopped by closing its stdin)."""
    if not child_process:
        async with EmulatorHost() as host:
            yield EmulatorLink(host.urls(), http)
        return
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.sync_emulator",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), _CHILD_START_S)
        if not line:
            raise RuntimeError("the emulator child exited before it listened")
        yield EmulatorLink(orjson.loads(line), http)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), _CHILD_STOP_S)
        except TimeoutError:
            child.kill()
            await child.wait()


async def _serve_child() -> None:
    """Serve until stdin closes (the parent ended or asked us to stop)."""
    async with EmulatorHost() as host:
        sys.stdout.write(orjson.dumps(host.urls()).decode() + "\n")
        sys.stdout.flush()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
        )
        try:
            await reader.read()  # EOF: time to go
        finally:
            transport.close()


if __name__ == "__main__":
    asyncio.run(_serve_child())
