"""The ``integration-worker`` command as a user runs it: real processes, real servers."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import telnetlib3

from providers.http import ssl_context
from sandbox.embedded import Services
from store.accounts import create_account, list_accounts
from store.credentials import Credentials, load_credentials, store_credentials
from store.crypto import Keyring, generate_key
from store.db import PgPool
from store.migrate import discover
from tests.conftest import SCHEMA

EXE = os.path.join(os.path.dirname(sys.executable), "integration-worker")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
FAST_RESTARTS = {
    "IW_RESTART_BACKOFF_INITIAL_S": "0.01",
    "IW_RESTART_BACKOFF_MAX_S": "0.05",
    "IW_RESTART_MAX": "2",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IW_")}
    env.update(
        IW_DATABASE_URL=database_url,
        IW_REDIS_URL=redis_url,
        IW_MONITOR_ENABLED="false",
        IW_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


async def run_cli(env: Mapping[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        EXE,
        *args,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_migrate_creates_the_schema_once(empty_database_url: str, services: Services) -> None:
    env = cli_env(empty_database_url, services.redis_url)
    code, out, err = await run_cli(env, "migrate")
    assert code == 0, err
    assert out.strip() == f"applied migrations: {[m.version for m in discover()]}"
    code, out, _ = await run_cli(env, "migrate")
    assert code == 0 and out.strip() == "database is up to date"
    conn = await asyncpg.connect(empty_database_url)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", SCHEMA
        )
    finally:
        await conn.close()
    assert {"accounts", "credentials", "schema_migrations"} <= {r[0] for r in tables}


async def test_invalid_configuration_fails_with_one_readable_line(services: Services) -> None:
    env = cli_env(services.database_url, services.redis_url, IW_SHARD_COUNT="zero")
    code, out, err = await run_cli(env, "migrate")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "invalid configuration: IW_SHARD_COUNT: Input should be a valid integer,"
        " unable to parse string as an integer"
    ]


async def test_rotate_keys_reencrypts_under_the_new_key(
    pool: PgPool, database_url: str, services: Services
) -> None:
    old, new = generate_key(), generate_key()
    before = Keyring("old", {"old": old})
    for i in range(3):
        account = await create_account(
            pool, provider="google", external_user_id=f"u{i}", shard_count=8
        )
        await store_credentials(pool, before, account.id, Credentials(account.id, f"1//rt-{i}"))
    keys = {
        name: base64.urlsafe_b64encode(key).decode() for name, key in [("old", old), ("new", new)]
    }
    env = cli_env(
        database_url,
        services.redis_url,
        IW_ENCRYPTION_KEYS=orjson.dumps(keys).decode(),
        IW_ENCRYPTION_KEY_ID="new",
    )
    code, out, err = await run_cli(env, "rotate-keys")
    assert code == 0, err
    assert out.strip() == "re-encrypted 3 credential rows under key 'new'"
    assert {r[0] for r in await pool.fetch("SELECT key_id FROM credentials")} == {"new"}
    after = Keyring("new", {"new": new})  # the old key is no longer needed
    tokens = [
        creds.refresh_token
        for account in await list_accounts(pool)
        if (creds := await load_credentials(pool, after, account.id)) is not None
    ]
    assert sorted(tokens) == ["1//rt-0", "1//rt-1", "1//rt-2"]


async def test_demo_syncs_real_accounts_through_push_and_matches_the_emulators(
    pool: PgPool, database_url: str, services: Services
) -> None:
    env = cli_env(database_url, services.redis_url)
    args = ("--accounts", "6", "--duration", "3", "--edits-per-s", "5", "--fault-rate", "0")
    code, out, err = await run_cli(env, "demo", *args)
    assert code == 0, err
    assert "database matches the emulators: yes (6/6 accounts)" in out
    status = [line for line in out.splitlines() if " actors (" in line]
    assert status and "6 actors (" in status[-1]
    notifications = int(re.findall(r"notifications (\d+)", status[-1])[0])
    assert notifications > 0  # the edits reached the actors through the gateway
    rows = await pool.fetch(
        "SELECT a.provider, count(*) FROM credentials c JOIN accounts a ON a.id = c.account_id"
        " WHERE c.access_token IS NOT NULL GROUP BY a.provider ORDER BY a.provider"
    )
    # Every account refreshed its token over HTTP(S) and stored it, on both providers.
    assert [(r[0], r[1]) for r in rows] == [("google", 3), ("microsoft", 3)]
    channels = await pool.fetch("SELECT provider, count(*) FROM push_channels GROUP BY 1")
    assert {r[0] for r in channels} == {"google", "microsoft"}


async def read_until(stream: asyncio.StreamReader, pattern: str) -> str:
    seen = ""
    async with asyncio.timeout(30):
        while pattern not in seen:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"stream ended before {pattern!r}; got {seen!r}")
            seen += line.decode()
    return seen


async def read_prompt(reader: telnetlib3.TelnetReaderUnicode, after_newline: bool) -> str:
    """Read until the monitor's prompt (the next one after the echoed command line)."""
    out = ""
    async with asyncio.timeout(10):
        while True:
            out += ANSI.sub("", await reader.read(65536))
            tail = out.split("\n", 1)[1] if after_newline and "\n" in out else out
            if "monitor >>>" in tail and not (after_newline and "\n" not in out):
                return out


async def monitor_command(
    reader: telnetlib3.TelnetReaderUnicode, writer: telnetlib3.TelnetWriterUnicode, command: str
) -> str:
    """Type one command at the monitor's prompt and return what it printed."""
    writer.write(command + "\r")
    return await read_prompt(reader, after_newline=True)


async def test_monitor_on_a_live_replica_then_clean_stop_on_sigint(
    database_url: str, services: Services
) -> None:
    port = free_port()
    env = cli_env(
        database_url,
        services.redis_url,
        IW_MONITOR_ENABLED="true",
        IW_MONITOR_PORT=str(port),
        IW_MONITOR_WEBUI_PORT=str(free_port()),
        IW_MONITOR_CONSOLE_PORT=str(free_port()),
        **FAST_RESTARTS,
    )
    proc = await asyncio.create_subprocess_exec(
        EXE,
        "demo",
        "--accounts",
        "4",
        "--fault-rate",
        "0",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        await read_until(proc.stdout, "4 actors (idle 4)")
        reader, writer = await telnetlib3.open_connection(
            "127.0.0.1", port, cols=220, rows=60, connect_minwait=0.2
        )
        assert isinstance(reader, telnetlib3.TelnetReaderUnicode)
        assert isinstance(writer, telnetlib3.TelnetWriterUnicode)
        try:
            banner = await read_prompt(reader, after_newline=False)
            assert "Asyncio Monitor" in banner
            table = await monitor_command(reader, writer, "actors")
            assert "4 actors (" in table
            assert re.search(r"^ID\s+KIND\s+STATE\s+STATUS\s+MAILBOX\s+RESTARTS", table, re.M)
            ids = re.findall(r"^([0-9a-f-]{36})\s+account\s", table, re.M)
            assert len(ids) == 4

            # The demo's people keep editing, so any one actor may be busy at a given moment.
            idle = await monitor_command(reader, writer, "actors --state idle")
            idle_ids = re.findall(r"^([0-9a-f-]{36})\s+account\s+idle\s", idle, re.M)
            assert idle_ids and set(idle_ids) <= set(ids) and "quarantined" not in idle
            assert not re.search(r"^[0-9a-f-]{36}\s+account\s+busy\s", idle, re.M)

            detail = await monitor_command(reader, writer, f"actor {ids[0]}")
            assert f"task:          actor[{ids[0]}]" in detail
            assert re.search(r"state:\s+(idle|busy)", detail)
            assert "poll" in detail  # its deadlines: the periodic safety-net sync

            missing = await monitor_command(reader, writer, "actor nobody")
            assert "no actor 'nobody'" in missing
        finally:
            writer.close()
        proc.send_signal(signal.SIGINT)
        rest = await read_until(proc.stdout, "database matches the emulators")
        assert "database matches the emulators: yes" in rest
        code = await asyncio.wait_for(proc.wait(), 60)
        assert code == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_supervise_runs_until_sigterm_and_exits_cleanly(
    database_url: str, services: Services
) -> None:
    key = base64.urlsafe_b64encode(generate_key()).decode()
    env = cli_env(database_url, services.redis_url, IW_LOG_LEVEL="INFO", IW_LOG_FORMAT="json")
    env |= {"IW_ENCRYPTION_KEYS": orjson.dumps({"k": key}).decode(), "IW_ENCRYPTION_KEY_ID": "k"}
    env |= {"IW_SHARD_COUNT": "8"}
    proc = await asyncio.create_subprocess_exec(
        EXE, "supervise", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    try:
        await read_until(proc.stderr, '"event":"replica running"')
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await proc.wait()
        rest = (await proc.stderr.read()).decode()
        assert code == 0, rest
        assert '"signal":"SIGTERM"' in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_google_emulator_command_serves_until_stopped(services: Services) -> None:
    port = free_port()
    env = cli_env(services.database_url, services.redis_url)
    proc = await asyncio.create_subprocess_exec(
        EXE, "emulator", "google", "--port", str(port), env=env, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        banner = await read_until(proc.stdout, "google emulator:")
        assert f"http://127.0.0.1:{port}/calendar/v3/" in banner
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/calendar/v3/users/me/calendarList"
            async with http.get(url) as response:
                assert response.status == 401
                body = await response.json()
        assert body["error"]["errors"][0]["reason"] == "authError"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_microsoft_emulator_command_serves_https_with_its_own_ca(
    services: Services,
) -> None:
    port = free_port()
    env = cli_env(services.database_url, services.redis_url)
    proc = await asyncio.create_subprocess_exec(
        EXE, "emulator", "microsoft", "--port", str(port), env=env, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        banner = await read_until(proc.stdout, "microsoft emulator:")
        match = re.search(r" ca (\S+)", banner)
        assert match is not None and f"https://127.0.0.1:{port}/v1.0/" in banner
        tls = ssl_context(Path(match.group(1)))  # trusting the printed CA is enough
        url = f"https://127.0.0.1:{port}/v1.0/me/calendars"
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http,
            http.get(url) as response,
        ):
            assert response.status == 401
            body = await response.json()
        assert body["error"]["code"] == "InvalidAuthenticationToken"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_gateway_command_serves_until_stopped(database_url: str, services: Services) -> None:
    port, ops_port = free_port(), free_port()
    env = cli_env(
        database_url, services.redis_url, IW_GATEWAY_PORT=str(port), IW_OPS_PORT=str(ops_port)
    )
    proc = await asyncio.create_subprocess_exec(
        EXE, "gateway", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(30):
            while True:  # until it listens
                try:
                    async with http.get(f"http://127.0.0.1:{ops_port}/healthz") as response:
                        assert response.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            headers = {"X-Goog-Channel-ID": "nobody", "X-Goog-Resource-State": "exists"}
            headers |= {"X-Goog-Message-Number": "5", "X-Goog-Resource-ID": "r"}
            async with http.post(f"http://127.0.0.1:{port}/webhooks/google", headers=headers) as r:
                assert r.status == 404  # no such channel: refused, nothing appended
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_supervise_without_encryption_keys_refuses_in_one_line(
    database_url: str, services: Services
) -> None:
    code, out, err = await run_cli(cli_env(database_url, services.redis_url), "supervise")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "invalid configuration: IW_ENCRYPTION_KEYS: no encryption key configured"
    ]
