"""Run retention: delete old runs and their event logs without regressing partition status.

Dagster's partition status comes from materialization events, which live in run event logs:
deleting the run that holds a partition's latest materialization would make the partition look
never materialized. So a run older than the cut-off is deleted only when
- it is finished,
- no materialization in it is still the latest of its asset partition, and
- it is not the run that explains a partition's current failure (`sync_state.last_run_id`
  of a failed or dead partition).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from sqlalchemy import select

from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import SyncState

FINISHED = [
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
]
PAGE = 500


def parse_age(text: str) -> dt.timedelta:
    """'7d', '12h', '30m' or '90s' as a timedelta; ValueError with the accepted forms."""
    match = re.fullmatch(r"\s*(\d+)\s*([dhms])\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not an age; use e.g. 7d, 12h, 30m or 90s")
    n, unit = int(match.group(1)), match.group(2)
    return dt.timedelta(**{{"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}[unit]: n})


@dataclass
class CleanupReport:
    """What a cleanup removed (or would remove) and what it kept, and why."""

    cutoff: str
    dry_run: bool
    examined: int = 0
    deleted: list[str] = field(default_factory=list)
    kept_latest_materialization: int = 0
    kept_explains_failure: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures (run ids of deleted runs included)."""
        return {
            "cutoff": self.cutoff,
            "dry_run": self.dry_run,
            "examined": self.examined,
            "deleted": len(self.deleted),
            "deleted_run_ids": self.deleted,
            "kept_latest_materialization": self.kept_latest_materialization,
            "kept_explains_failure": self.kept_explains_failure,
        }


class _Latest:
    """Run holding the latest materialization per (asset, partition), looked up once each.

    Compared by run id: SQLite storage numbers events differently in a run's own log and in
    the index, so storage ids of the two cannot be compared.
    """

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self._instance = instance
        self._cache: dict[tuple[dg.AssetKey, str | None], str | None] = {}

    def run_id(self, key: dg.AssetKey, partition: str | None) -> str | None:
        if (key, partition) in self._cache:
            return self._cache[(key, partition)]
        result = self._instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=key, asset_partitions=[partition] if partition is not None else None
            ),
            limit=1,
            ascending=False,
        )
        value = result.records[0].run_id if result.records else None
        self._cache[(key, partition)] = value
        return value


def _holds_latest(instance: dg.DagsterInstance, run_id: str, latest: _Latest) -> bool:
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None or event.asset_key is None:
            continue
        if latest.run_id(event.asset_key, event.partition) == run_id:
            return True
    return False


def failure_run_ids(db_url: str) -> set[str]:
    """Runs that explain current failures (kept so the failure can be reviewed)."""
    with transaction(db_url) as s:
        return {
            run_id
            for run_id in s.scalars(
                select(SyncState.last_run_id).where(
                    SyncState.status.in_(["failed", "dead"]), SyncState.last_run_id.is_not(None)
                )
            )
            if run_id
        }


def cleanup_runs(
    instance: dg.DagsterInstance,
    db_url: str,
    *,
    older_than: dt.timedelta,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> CleanupReport:
    """Delete finished runs last updated before now - older_than, keeping those that hold a
    partition's latest materialization or explain a current failure."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - older_than
    report = CleanupReport(cutoff=cutoff.isoformat(), dry_run=dry_run)
    keep_failures = failure_run_ids(db_url)
    latest = _Latest(instance)
    cursor: str | None = None
    while True:
        records = instance.get_run_records(
            dg.RunsFilter(statuses=FINISHED, updated_before=cutoff),
            limit=PAGE,
            cursor=cursor,
        )
        if not records:
            break
        cursor = records[-1].dagster_run.run_id
        for record in records:
            run_id = record.dagster_run.run_id
            report.examined += 1
            if run_id in keep_failures:
                report.kept_explains_failure += 1
                continue
            if _holds_latest(instance, run_id, latest):
                report.kept_latest_materialization += 1
                continue
            report.deleted.append(run_id)
    if not dry_run:
        for run_id in report.deleted:
            instance.delete_run(run_id)
    return report
