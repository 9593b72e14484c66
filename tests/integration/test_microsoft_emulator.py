"""The Microsoft identity platform + Graph emulator against msal and the documented protocol.

Real servers on loopback throughout: the emulator over HTTPS (its own CA), and a tiny plain-HTTP
aiohttp receiver for change and lifecycle notifications.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import aiohttp
import msal
import pytest
import requests
from aiohttp import web

from sandbox.emulators.microsoft import MicrosoftEmulator
from sandbox.emulators.microsoft.recurrence import expand

CLIENT_ID, CLIENT_SECRET = "11111111-2222-3333-4444-555555555555", "s3cret~value"
UPN = "adele@contoso.example"
SCOPES = ["https://graph.microsoft.com/Calendars.ReadWrite"]
WINDOW = {"startDateTime": "2027-03-01T00:00:00", "endDateTime": "2027-05-01T00:00:00"}
GRAPH_DT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}$")
INNER_KEYS = {"date", "request-id", "client-request-id"}


@dataclass
class Env:
    emu: MicrosoftEmulator
    http: aiohttp.ClientSession
    refresh_token: str
    user_id: str
    access_token: str = ""

    async def call(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> tuple[int, Any, dict[str, str]]:
        """A Graph call (relative to v1.0 unless absolute): status, JSON body or None, headers."""
        full = url if url.startswith("https://") else self.emu.graph_base_url + url
        all_headers = dict(headers or {})
        if auth:
            all_headers["Authorization"] = f"Bearer {self.access_token}"
        async with self.http.request(
            method, full, params=params, json=json, headers=all_headers
        ) as resp:
            text = await resp.text()
            body = await resp.json(content_type=None) if text else None
            return resp.status, body, dict(resp.headers)

    async def token(self, refresh_token: str, **extra: str) -> tuple[int, Any, dict[str, str]]:
        form = {
            "grant_type": "refresh_token",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_token": refresh_token,
            "scope": " ".join([*SCOPES, "offline_access"]),
            **extra,
        }
        async with self.http.post(self.emu.token_endpoint, data=form) as resp:
            return resp.status, await resp.json(), dict(resp.headers)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with MicrosoftEmulator(validation_timeout_s=1.0) as emu:
        connector = aiohttp.TCPConnector(ssl=emu.ssl_context())
        async with aiohttp.ClientSession(connector=connector) as http:
            emu.control.add_client(CLIENT_ID, CLIENT_SECRET)
            user = emu.control.add_user(UPN, CLIENT_ID)
            environment = Env(emu, http, user["refresh_token"], user["id"])
            status, body, _ = await environment.token(user["refresh_token"])
            assert status == 200
            environment.access_token = body["access_token"]
            yield environment


def timed(subject: str, start: str, end: str, tz: str = "UTC", **extra: Any) -> dict[str, Any]:
    return {
        "subject": subject,
        "start": {"dateTime": start, "timeZone": tz},
        "end": {"dateTime": end, "timeZone": tz},
        **extra,
    }


def assert_graph_error(body: Any, code: str) -> None:
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert set(body["error"]["innerError"]) >= INNER_KEYS


async def walk(env: Env, first: str, **kw: Any) -> tuple[list[dict[str, Any]], str, list[str]]:
    """Follow nextLinks verbatim to the deltaLink; return items, deltaLink and links seen."""
    items: list[dict[str, Any]] = []
    links: list[str] = []
    url, params = first, kw.pop("params", None)
    while True:
        status, body, headers = await env.call("GET", url, params=params, **kw)
        assert status == 200, body
        assert body["@odata.context"].endswith("$metadata#Collection(event)")
        assert "odata.track-changes" in headers["Preference-Applied"]
        items.extend(body["value"])
        params = None
        if "@odata.deltaLink" in body:
            assert "@odata.nextLink" not in body
            assert "$deltatoken=" in body["@odata.deltaLink"]
            return items, body["@odata.deltaLink"], links
        url = body["@odata.nextLink"]
        assert "$skiptoken=" in url and "startDateTime" not in url
        links.append(url)


# --- identity platform: msal over HTTPS ------------------------------------------------------


def _msal_app(env: Env) -> tuple[Any, requests.Session]:
    session = requests.Session()
    session.trust_env = False
    session.verify = env.emu.ca_pem_path
    app = msal.ConfidentialClientApplication(
        CLIENT_ID,
        client_credential=CLIENT_SECRET,
        authority=env.emu.authority,
        instance_discovery=False,
        http_client=session,
    )
    return app, session


def _msal_refresh(env: Env, refresh_token: str) -> dict[str, Any]:
    """A fresh msal app (so its 400-throttling cache never answers) refreshes once."""
    app, session = _msal_app(env)
    try:
        result: dict[str, Any] = app.acquire_token_by_refresh_token(refresh_token, scopes=SCOPES)
        if "access_token" in result:
            assert app.get_accounts()[0]["username"] == UPN
        return result
    finally:
        session.close()


async def test_msal_refreshes_rotates_and_reports_invalid_grant(env: Env) -> None:
    first = await asyncio.to_thread(_msal_refresh, env, env.refresh_token)
    assert first["token_type"] == "Bearer" and first["expires_in"] > 0
    rotated = first["refresh_token"]
    assert rotated != env.refresh_token
    # Entra keeps the presented refresh token valid until its own expiry.
    again = await asyncio.to_thread(_msal_refresh, env, env.refresh_token)
    assert "access_token" in again
    status, _, _ = await env.call("GET", "me/calendars")
    assert status == 200

    env.emu.control.require_mfa(UPN)
    mfa = await asyncio.to_thread(_msal_refresh, env, rotated)
    assert mfa["error"] == "invalid_grant" and mfa["error_codes"] == [50076]
    assert mfa["suberror"] == "basic_action"
    env.emu.control.require_mfa(UPN, False)

    env.emu.control.revoke_refresh_token(rotated)
    revoked = await asyncio.to_thread(_msal_refresh, env, rotated)
    assert revoked["error"] == "invalid_grant" and revoked["error_codes"] == [50173]
    assert {"error_description", "timestamp", "trace_id", "correlation_id"} <= set(revoked)
    assert revoked["error_description"].startswith("AADSTS50173:")


async def test_token_endpoint_errors_and_client_info(env: Env) -> None:
    status, body, headers = await env.token(env.refresh_token, client_info="1")
    assert status == 200 and headers["Cache-Control"].startswith("no-store")
    assert {"access_token", "refresh_token", "expires_in", "ext_expires_in", "scope"} <= set(body)
    assert "client_info" in body
    status, body, _ = await env.token(env.refresh_token, client_secret="wrong")
    assert status == 401 and body["error"] == "invalid_client"
    status, body, _ = await env.token("not-a-token")
    assert status == 400 and body["error"] == "invalid_grant"
    env.emu.control.set_block(UPN, "interaction_required")
    status, body, _ = await env.token(env.refresh_token)
    assert status == 400 and body["error"] == "interaction_required"


async def test_graph_rejects_missing_and_expired_tokens(env: Env) -> None:
    status, body, headers = await env.call("GET", "me/calendars", auth=False)
    assert status == 401 and "WWW-Authenticate" in headers
    assert_graph_error(body, "InvalidAuthenticationToken")
    env.emu.control.expire_access_tokens(UPN)
    status, body, _ = await env.call("GET", "me/calendars")
    assert status == 401 and "expired" in body["error"]["message"]


async def test_calendars_are_paged_with_one_default(env: Env) -> None:
    for n in range(3):
        env.emu.control.add_calendar(UPN, f"Team {n}")
    status, body, _ = await env.call("GET", "me/calendars", params={"$top": "2"})
    assert status == 200 and len(body["value"]) == 2
    status, rest, _ = await env.call("GET", body["@odata.nextLink"])
    assert "@odata.nextLink" not in rest
    cals = body["value"] + rest["value"]
    assert [c["isDefaultCalendar"] for c in cals].count(True) == 1
    assert {"id", "name", "canEdit", "owner", "@odata.etag"} <= set(cals[0])


# --- calendarView delta ----------------------------------------------------------------------


async def test_delta_walk_changes_removals_and_expiry(env: Env) -> None:
    ids = [
        env.emu.control.create_event(
            UPN, timed(f"e{n}", f"2027-03-0{n + 2}T10:00:00", f"2027-03-0{n + 2}T11:00:00")
        )["id"]
        for n in range(5)
    ]
    prefer = {"Prefer": "odata.maxpagesize=2"}
    items, delta_link, links = await walk(
        env, "me/calendarView/delta", params=WINDOW, headers=prefer
    )
    assert sorted(i["id"] for i in items) == sorted(ids) and len(links) == 2
    first = next(i for i in items if i["id"] == ids[0])
    assert first["@odata.type"] == "#microsoft.graph.event"
    assert first["@odata.etag"] == f'W/"{first["changeKey"]}"'
    assert first["type"] == "singleInstance" and first["start"]["timeZone"] == "UTC"
    assert GRAPH_DT.match(first["start"]["dateTime"]) and first["start"]["dateTime"].startswith(
        "2027-03-02T10:00:00"
    )
    assert {"iCalUId", "lastModifiedDateTime", "createdDateTime", "isCancelled"} <= set(first)

    env.emu.control.update_event(UPN, ids[0], {"subject": "renamed"})
    env.emu.control.delete_event(UPN, ids[1])
    moved = {"start": {"dateTime": "2028-01-01T10:00:00", "timeZone": "UTC"},
             "end": {"dateTime": "2028-01-01T11:00:00", "timeZone": "UTC"}}  # fmt: skip
    env.emu.control.update_event(UPN, ids[2], moved)
    items, delta_link2, _ = await walk(env, delta_link, headers=prefer)
    by_id = {i["id"]: i for i in items}
    assert by_id[ids[0]]["subject"] == "renamed"
    removed = {"@odata.type": "#microsoft.graph.event", "@removed": {"reason": "deleted"}}
    assert by_id[ids[1]] == {"id": ids[1], **removed}
    assert by_id[ids[2]] == {"id": ids[2], **removed}
    assert set(by_id) == set(ids[:3])

    # Replaying the first skip link after later pages were fetched: that generation is gone.
    status, body, _ = await env.call("GET", links[0])
    assert status == 410
    assert_graph_error(body, "SyncStateNotFound")
    assert body["error"]["message"].startswith("The sync state generation is not found")

    env.emu.control.invalidate_delta_tokens(UPN)
    status, body, headers = await env.call("GET", delta_link2)
    assert status == 410 and "startDateTime=" in headers["Location"]
    assert_graph_error(body, "SyncStateNotFound")
    status, body, _ = await env.call("GET", headers["Location"])
    assert status == 200 and "value" in body


async def test_delta_options_timezone_versions_and_replays(env: Env) -> None:
    env.emu.control.create_event(UPN, timed("a", "2027-03-02T10:00:00", "2027-03-02T11:00:00"))
    status, body, _ = await env.call(
        "GET", "me/calendarView/delta", params={**WINDOW, "$select": "subject"}
    )
    assert status == 400
    status, body, _ = await env.call("GET", "me/calendarView/delta")
    assert status == 400 and body["error"]["code"] == "ErrorInvalidParameter"
    cal = env.emu.control.add_calendar(UPN, "Other")["id"]
    status, body, _ = await env.call("GET", f"me/calendars/{cal}/calendarView/delta", params=WINDOW)
    assert status == 400 and "segment 'delta'" in body["error"]["message"]
    beta = f"{env.emu.graph_beta_base_url}me/calendars/{cal}/calendarView/delta"
    items, _, _ = await walk(env, beta, params=WINDOW)
    assert items == []

    prefer = {"Prefer": 'outlook.timezone="Pacific Standard Time"'}
    items, link, _ = await walk(env, "me/calendarView/delta", params=WINDOW, headers=prefer)
    assert items[0]["start"] == {
        "dateTime": "2027-03-02T02:00:00.0000000",
        "timeZone": "Pacific Standard Time",
    }
    env.emu.control.replay_delta_rounds(1)
    again, _, _ = await walk(env, link)
    assert [i["id"] for i in again] == [items[0]["id"]]


async def test_weekly_series_across_dst_cancel_and_exception(env: Env) -> None:
    tz = "W. Europe Standard Time"
    body = timed("standup", "2027-03-15T09:00:00", "2027-03-15T09:30:00", tz)
    body["recurrence"] = {
        "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
        "range": {"type": "numbered", "startDate": "2027-03-15", "numberOfOccurrences": 4},
    }
    master = env.emu.control.create_event(UPN, body)
    assert master["type"] == "seriesMaster"
    items, link, _ = await walk(env, "me/calendarView/delta", params=WINDOW)
    starts = sorted(i["start"]["dateTime"][:19] for i in items)
    # DST begins on the last Sunday of March (2027-03-28): 09:00 local is 08:00Z then 07:00Z.
    assert starts == [
        "2027-03-15T08:00:00",
        "2027-03-22T08:00:00",
        "2027-03-29T07:00:00",
        "2027-04-05T07:00:00",
    ]
    assert all(i["type"] == "occurrence" and i["seriesMasterId"] == master["id"] for i in items)
    assert len({i["iCalUId"] for i in items}) == 4 and "seriesMaster" not in {
        i["type"] for i in items
    }

    control = env.emu.control
    control.cancel_occurrence(UPN, master["id"], datetime(2027, 3, 22, 8, tzinfo=UTC))
    control.modify_occurrence(
        UPN, master["id"], datetime(2027, 3, 29, 7, tzinfo=UTC), {"subject": "moved standup"}
    )
    items, _, _ = await walk(env, link)
    cancelled = control.occurrence_id(master["id"], datetime(2027, 3, 22, 8, tzinfo=UTC))
    modified = control.occurrence_id(master["id"], datetime(2027, 3, 29, 7, tzinfo=UTC))
    by_id = {i["id"]: i for i in items}
    assert by_id[cancelled]["@removed"] == {"reason": "deleted"}
    assert by_id[modified]["type"] == "exception"
    assert by_id[modified]["subject"] == "moved standup"
    assert by_id[modified]["originalStart"] == "2027-03-29T07:00:00Z"


def test_recurrence_expansion_is_pure() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2027, 1, 31, 9, tzinfo=berlin)
    rule = {
        "pattern": {"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 31},
        "range": {"type": "endDate", "startDate": "2027-01-31", "endDate": "2027-05-31"},
    }
    window = (datetime(2027, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC))
    occs = expand(rule, start, start + timedelta(hours=1), window)
    assert [o.start.month for o in occs] == [1, 3, 5]


# --- event writes ----------------------------------------------------------------------------


async def test_writes_transaction_id_if_match_and_not_found(env: Env) -> None:
    new = timed("lunch", "2027-03-03T12:00:00", "2027-03-03T13:00:00", transactionId="tx-1")
    status, first, _ = await env.call("POST", "me/events", json=new)
    assert status == 201
    status, second, _ = await env.call("POST", "me/events", json=new)
    assert second["id"] == first["id"]
    status, body, _ = await env.call(
        "PATCH", f"me/events/{first['id']}", json={"subject": "x"}, headers={"If-Match": 'W/"no"'}
    )
    assert status == 412
    assert_graph_error(body, "ErrorIrresolvableConflict")
    status, patched, _ = await env.call(
        "PATCH",
        f"me/events/{first['id']}",
        json={"subject": "brunch"},
        headers={"If-Match": first["@odata.etag"]},
    )
    assert status == 200 and patched["changeKey"] != first["changeKey"]
    status, _, _ = await env.call("DELETE", f"me/events/{first['id']}")
    assert status == 204
    status, body, _ = await env.call("GET", f"me/events/{first['id']}")
    assert status == 404
    assert_graph_error(body, "ErrorItemNotFound")


# --- subscriptions and notifications ---------------------------------------------------------


@dataclass
class Receiver:
    mode: str = "echo"  # echo | encoded | slow | fail_once
    posts: list[tuple[str, Any]] = field(default_factory=list)
    failures: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        token = request.query.get("validationToken")
        if token is not None:
            assert request.content_type == "text/plain"
            if self.mode == "slow":
                await asyncio.sleep(1.5)
            if self.mode == "encoded":
                raw = request.raw_path.split("validationToken=", 1)[1]
                return web.Response(text=raw, content_type="text/plain")
            return web.Response(text=token, content_type="text/plain")
        body = await request.json()
        self.posts.append((request.path_qs, body))
        if self.mode == "fail_once" and self.failures == 0:
            self.failures += 1
            return web.Response(status=503)
        return web.Response(status=202)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield rec, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _sub_body(url: str, minutes: float = 60, **extra: Any) -> dict[str, Any]:
    expiry = datetime.now(UTC) + timedelta(minutes=minutes)
    return {
        "changeType": "created,updated,deleted",
        "notificationUrl": f"{url}/hook?tenant=a",
        "lifecycleNotificationUrl": f"{url}/life",
        "resource": "/me/events",
        "expirationDateTime": expiry.isoformat().replace("+00:00", "Z"),
        "clientState": "secret-state",
        **extra,
    }


async def _settled(rec: Receiver, count: int) -> None:
    for _ in range(100):
        if len(rec.posts) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} posts, got {rec.posts}")


async def test_subscription_handshake_lifetime_renew_delete(
    env: Env, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    for mode in ("encoded", "slow"):
        rec.mode = mode
        status, body, _ = await env.call("POST", "subscriptions", json=_sub_body(url))
        assert status == 400, mode
        assert_graph_error(body, "ValidationError")
    rec.mode = "echo"
    status, body, _ = await env.call("POST", "subscriptions", json=_sub_body(url, 10081))
    assert status == 400
    status, body, _ = await env.call("POST", "subscriptions", json=_sub_body(url, -1))
    assert status == 400
    status, sub, _ = await env.call(
        "POST", "subscriptions", json=_sub_body(url, resource="me/events")
    )
    assert status == 201 and sub["clientState"] == "secret-state"
    later = (datetime.now(UTC) + timedelta(days=6)).isoformat().replace("+00:00", "Z")
    status, renewed, _ = await env.call(
        "PATCH", f"subscriptions/{sub['id']}", json={"expirationDateTime": later}
    )
    assert status == 200 and renewed["expirationDateTime"] != sub["expirationDateTime"]
    status, _, _ = await env.call(
        "PATCH", f"subscriptions/{sub['id']}", json={"lifecycleNotificationUrl": f"{url}/x"}
    )
    assert status == 400
    status, _, _ = await env.call("POST", f"subscriptions/{sub['id']}/reauthorize")
    assert status == 204
    status, _, _ = await env.call("DELETE", f"subscriptions/{sub['id']}")
    assert status == 204
    status, body, _ = await env.call("DELETE", f"subscriptions/{sub['id']}")
    assert status == 404


async def test_notifications_batched_retried_and_lifecycle(
    env: Env, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    subs = []
    for _ in range(2):
        status, sub, _ = await env.call("POST", "subscriptions", json=_sub_body(url))
        assert status == 201
        subs.append(sub["id"])
    rec.mode = "fail_once"
    event = env.emu.control.create_event(
        UPN, timed("a", "2027-03-02T10:00:00", "2027-03-02T11:00:00")
    )
    env.emu.control.update_event(UPN, event["id"], {"subject": "b"})
    await _settled(rec, 2)
    (path, first), (_, retry) = rec.posts[:2]
    assert path == "/hook?tenant=a" and first == retry
    items = first["value"]
    assert len(items) == 4 and {i["subscriptionId"] for i in items} == set(subs)
    assert {i["changeType"] for i in items} == {"created", "updated"}
    item = items[0]
    assert item["clientState"] == "secret-state"
    assert item["resource"] == f"Users/{env.user_id}/Events/{event['id']}"
    assert item["resourceData"]["@odata.type"] == "#Microsoft.Graph.Event"
    assert set(item["resourceData"]) == {"@odata.type", "@odata.id", "@odata.etag", "id"}

    rec.posts.clear()
    env.emu.control.fire_lifecycle(subs[0], "missed")
    env.emu.control.fire_lifecycle(subs[1], "subscriptionRemoved")
    await _settled(rec, 1)
    path, life = rec.posts[0]
    assert path == "/life"
    assert {i["lifecycleEvent"] for i in life["value"]} == {"missed", "subscriptionRemoved"}
    assert set(life["value"][0]) == {
        "subscriptionId",
        "subscriptionExpirationDateTime",
        "tenantId",
        "clientState",
        "lifecycleEvent",
    }
    status, _, _ = await env.call("GET", f"subscriptions/{subs[1]}")
    assert status == 404


# --- faults ----------------------------------------------------------------------------------


async def test_faults_answer_documented_status_body_headers(env: Env) -> None:
    control = env.emu.control
    control.add_fault("throttled", path="/v1.0/me/calendars")
    status, body, headers = await env.call("GET", "me/calendars")
    assert status == 429 and headers["Retry-After"] == "2.128"
    assert_graph_error(body, "TooManyRequests")
    assert body["error"]["innerError"]["status"] == "429"
    control.add_fault("unavailable", retry_after="7")
    status, body, headers = await env.call("GET", "me/calendars")
    assert status == 503 and headers["Retry-After"] == "7"
    for kind, code in (("unavailable", 503), ("server_error", 500), ("gateway_timeout", 504)):
        control.add_fault(kind, method="GET")
        status, body, headers = await env.call("GET", "me/calendars")
        assert status == code and "Retry-After" not in headers
        assert set(body["error"]["innerError"]) >= INNER_KEYS
    control.add_fault("malformed_json")
    async with env.http.get(
        env.emu.graph_base_url + "me/calendars",
        headers={"Authorization": f"Bearer {env.access_token}"},
    ) as resp:
        with pytest.raises(ValueError):
            await resp.json()
    control.add_fault("latency", delay_s=0.2)
    started = asyncio.get_running_loop().time()
    await env.call("GET", "me/calendars")
    assert asyncio.get_running_loop().time() - started >= 0.2
    control.add_fault("empty_page", path="*/calendarView/delta")
    status, body, _ = await env.call("GET", "me/calendarView/delta", params=WINDOW)
    assert body["value"] == [] and "@odata.nextLink" in body
    control.add_fault("throttled", path="*/oauth2/v2.0/token", retry_after="1.5")
    status, body, headers = await env.token(env.refresh_token)
    assert status == 429 and headers["Retry-After"] == "1.5" and "error_codes" in body


async def test_control_http_api(env: Env) -> None:
    async with env.http.post(env.emu.control_url + "faults", json={"kind": "nope"}) as resp:
        assert resp.status == 400
    async with env.http.post(
        env.emu.control_url + f"users/{UPN}/events",
        json=timed("c", "2027-03-02T10:00:00", "2027-03-02T11:00:00"),
    ) as resp:
        created = await resp.json()
    async with env.http.get(env.emu.control_url + f"users/{UPN}/events") as resp:
        assert [e["id"] for e in (await resp.json())["value"]] == [created["id"]]
    async with env.http.post(
        env.emu.control_url + f"users/{UPN}/invalidate_delta", json={"code": "resyncRequired"}
    ) as resp:
        assert (await resp.json()) == {"invalidated": 0}
    parsed = urlsplit(env.emu.authority)
    assert parsed.scheme == "https" and parse_qs(parsed.query) == {}
    assert isinstance(ssl.create_default_context(cafile=env.emu.ca_pem_path), ssl.SSLContext)
