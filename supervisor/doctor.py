"""``integration-worker doctor``: the hourly audit's findings for an operator, on demand.

Invariants:
- the same audit as the maintenance job (``maintenance_jobs.find_problems`` with the settings'
  thresholds); ``--repair`` appends the same stream entries the hourly job does;
- stdout carries only the table (or one JSON object with ``--json``); exit code 0 when healthy,
  1 when there are findings (after ``--repair`` too: they existed when audited);
- no token or channel secret is read, so none can be printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from config.settings import Settings
from operations.accounts import OperatorError
from store.db import PgPool, create_pool
from supervisor.maintenance_audit import AuditPolicy, Finding, count_findings
from supervisor.maintenance_jobs import audit_policy, find_problems, request_repairs
from supervisor.services import open_services


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """What the doctor found, and how many repairs it requested."""

    findings: list[Finding]
    repairs_requested: int | None  # None: no repair asked for

    @property
    def healthy(self) -> bool:
        """Whether nothing was found."""
        return not self.findings


def findings_table(findings: Sequence[Finding]) -> str:
    """A fixed-width table: account, provider, shard, calendar, finding, detail."""
    if not findings:
        return "healthy: no findings"
    header = ("ACCOUNT", "PROVIDER", "SHARD", "CALENDAR", "FINDING", "DETAIL")
    rows = [header] + [
        (
            str(f.account_id),
            f.provider,
            str(f.shard),
            f.calendar_id or "-",
            f.kind.value,
            f.detail,
        )
        for f in findings
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def report_json(report: DoctorReport) -> dict[str, Any]:
    """The report as one JSON-ready object."""
    return {
        "healthy": report.healthy,
        "by_kind": count_findings(report.findings),
        "findings": [
            {
                "account_id": str(f.account_id),
                "provider": f.provider,
                "shard": f.shard,
                "calendar_id": f.calendar_id,
                "kind": f.kind.value,
                "detail": f.detail,
            }
            for f in report.findings
        ],
        "repairs_requested": report.repairs_requested,
    }


async def examine(
    pool: PgPool, policy: AuditPolicy, now: datetime, *, repair_with: Redis | None = None
) -> DoctorReport:
    """Audit now; with ``repair_with``, request the repairs through its shard streams."""
    findings = await find_problems(pool, policy, now)
    repairs = None
    if repair_with is not None:
        repairs = await request_repairs(repair_with, findings, now)
    return DoctorReport(findings, repairs)


def render(report: DoctorReport, *, as_json: bool) -> str:
    """What the command prints on stdout."""
    if as_json:
        return orjson.dumps(report_json(report)).decode()
    text = findings_table(report.findings)
    if report.repairs_requested is not None:
        text += f"\nrepairs requested: {report.repairs_requested}"
    return text


async def _doctor(settings: Settings, args: argparse.Namespace) -> None:
    policy = audit_policy(settings)
    now = datetime.now(UTC)
    async with open_services(settings) as urls:
        pool = await create_pool(urls.database_url, settings.db_schema, min_size=1, max_size=2)
        redis = Redis.from_url(urls.redis_url) if args.repair else None
        try:
            report = await examine(pool, policy, now, repair_with=redis)
        except asyncpg.UndefinedTableError:
            raise OperatorError(
                "the database is not migrated: run `integration-worker migrate` first"
            ) from None
        finally:
            if redis is not None:
                await redis.aclose()
            await pool.close()
    print(render(report, as_json=args.json))
    if not report.healthy:
        accounts = len({f.account_id for f in report.findings})
        raise OperatorError(f"{len(report.findings)} finding(s) in {accounts} account(s)")
