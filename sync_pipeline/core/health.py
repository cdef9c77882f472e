"""Queue figures and dead letters of a source, for `sync-pipeline status`, checks and sensors."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg
from sqlalchemy import func, select

from sync_pipeline.core.budget import WindowUsage
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import SyncState
from sync_pipeline.core.priorities import SOURCE_TAG

ACTIVE = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING]
#: A health sensor records its queue figures when one changed, else at least this often (so
#: plots keep reaching the present); every stored observation stays in the event log for ever.
HEALTH_OBSERVATION_MAX_AGE_SECONDS = 30 * 60


@dataclass
class SourceHealth:
    """One source's queue and sync figures."""

    source: str
    queued: int
    running: int
    succeeded_24h: int
    failed_24h: int
    oldest_queued_seconds: float | None
    partitions_by_status: dict[str, int]
    dead_letters: int
    needs_reconnect: int = 0
    budget: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return asdict(self)

    def metadata(self) -> dict[str, Any]:
        """Flat figures worth plotting over time in the UI."""
        md: dict[str, Any] = {
            "runs_queued": self.queued,
            "runs_running": self.running,
            "runs_succeeded_24h": self.succeeded_24h,
            "runs_failed_24h": self.failed_24h,
            "oldest_queued_seconds": round(self.oldest_queued_seconds or 0.0, 1),
            "dead_letters": self.dead_letters,
            "needs_reconnect": self.needs_reconnect,
        }
        for status, n in self.partitions_by_status.items():
            md[f"partitions_{status}"] = n
        for b in self.budget:
            md[f"budget_{b['name']}_left"] = b["left"]
        return md


def budget_label(bucket: str) -> str:
    """A budget bucket (source prefix removed) named for people, without app or client ids:
    `12345:overall:15min` -> `overall_15min`, `tweets:app:<client id>` -> `tweets_app`,
    `quota:<client id>` -> `quota`, `core:per-user` -> `core_per_user`."""
    parts = bucket.split(":")
    kept = [
        p
        for i, p in enumerate(parts)
        if not p.isdigit() and not (i > 0 and parts[i - 1] in ("app", "quota"))
    ]
    return "_".join(kept).replace("-", "_")


def budget_rows(usage: list[WindowUsage]) -> list[dict[str, Any]]:
    """Budget windows as rows: `bucket` without the source prefix, `name` for people."""
    return [
        {
            "name": budget_label(u.bucket.split(":", 1)[-1]),
            "bucket": u.bucket.split(":", 1)[-1],
            "used": u.used,
            "limit": u.limit,
            "left": u.left,
            "resets_at": dt.datetime.fromtimestamp(u.resets_at, dt.UTC).isoformat(),
        }
        for u in usage
    ]


def source_health(
    instance: dg.DagsterInstance,
    db_url: str,
    source: str,
    *,
    needs_reconnect: int = 0,
    budget: list[WindowUsage] | None = None,
) -> SourceHealth:
    """Figures from the run storage (indexed tag queries) and the app database (group-bys)."""
    tags = {SOURCE_TAG: source}
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=24)

    def count(statuses: list[dg.DagsterRunStatus], **kw: Any) -> int:
        return instance.get_runs_count(dg.RunsFilter(statuses=statuses, tags=tags, **kw))

    oldest = instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED], tags=tags), limit=1, ascending=True
    )
    with transaction(db_url) as s:
        by_status = {
            str(k): int(v)
            for k, v in s.execute(
                select(SyncState.status, func.count())
                .where(SyncState.source == source)
                .group_by(SyncState.status)
            ).all()
        }
    return SourceHealth(
        source=source,
        queued=count([dg.DagsterRunStatus.QUEUED]),
        running=count(ACTIVE),
        succeeded_24h=count([dg.DagsterRunStatus.SUCCESS], updated_after=since),
        failed_24h=count([dg.DagsterRunStatus.FAILURE], updated_after=since),
        oldest_queued_seconds=(
            time.time() - oldest[0].create_timestamp.timestamp() if oldest else None
        ),
        partitions_by_status=by_status,
        dead_letters=by_status.get("dead", 0),
        needs_reconnect=needs_reconnect,
        budget=budget_rows(budget or []),
    )


_JSON_MESSAGE = re.compile(r'"(?:message|error_description|error)"\s*:\s*"((?:[^"\\]|\\.)*)"')


def reason_summary(message: str | None, limit: int = 160) -> str:
    """A failure's reason on one readable line: an API's JSON error body becomes its message,
    and a long reason ends at a word with "…" (never in the middle of a JSON body)."""
    text = " ".join((message or "").split())
    start = text.find("{")
    if start >= 0:
        body = text[start:]
        try:
            parsed: Any = json.loads(body)
            found = [
                str(parsed[k])
                for k in ("message", "error_description", "error")
                if isinstance(parsed, dict) and isinstance(parsed.get(k), str)
            ]
        except ValueError:  # a body cut short when the error was recorded
            found = [m.encode().decode("unicode_escape") for m in _JSON_MESSAGE.findall(body)]
        text = (text[:start].rstrip() + " " + (found[0] if found else "(error body)")).strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut + " …"


def dead_letter_rows(states: list[SyncState]) -> list[dict[str, Any]]:
    """Dead letters as rows for the CLI and check metadata."""
    return [
        {
            "source": st.source,
            "partition": st.partition_key,
            "error_class": st.last_error_class,
            "message": (st.last_error or "")[:300],
            "attempts": st.consecutive_failures,
            "first_failure_at": st.first_failure_at.isoformat() if st.first_failure_at else None,
            "last_failure_at": st.last_error_at.isoformat() if st.last_error_at else None,
            "run_id": st.last_run_id,
        }
        for st in states
    ]


@dataclass(frozen=True)
class ItemDeadLetters:
    """Dead letters below the partition: items a sync records and retries on its own (e.g.
    Promidata's families and images), listed and redriven one by one with the partitions'."""

    #: (app DB URL) -> rows with `dead_letter_rows`' fields plus `stage`, `kind`, `item` and
    #: `key` (what `sync-pipeline dead-letters redrive --key` takes), newest first.
    rows: Callable[[str], list[dict[str, Any]]]
    #: (app DB URL, key) -> the partition whose next sync retries the item, or None when the
    #: key names no dead letter.
    redrive: Callable[[str, str], str | None]


def dead_letter_check(
    asset_key: dg.AssetKey,
    check_name: str,
    states: list[SyncState],
    items: Sequence[dict[str, Any]] = (),
) -> dg.AssetCheckEvaluation:
    """Fails while dead letters exist (partitions, and `items` below them: `ItemDeadLetters`
    rows), listing them, newest first (first 50), in its metadata."""
    entries = [
        (row["partition"], row, reason_summary(st.last_error, 200))
        for st, row in zip(states, dead_letter_rows(states), strict=True)
    ] + [(row["key"], row, reason_summary(row["message"], 200)) for row in items]
    if items:
        entries.sort(key=lambda e: str(e[1]["last_failure_at"] or ""), reverse=True)
    table = "\n".join(
        f"| {name} | {r['error_class']} | {r['attempts']} | {r['last_failure_at']} "
        f"| {reason.replace('|', '/')} | "
        + (f"[{r['run_id'][:8]}](/runs/{r['run_id']})" if r["run_id"] else "-")
        + " |"
        for name, r, reason in entries[:50]
    )
    metadata: dict[str, Any] = {"dead_letters": len(entries)}
    if items:
        metadata["dead_partitions"], metadata["dead_items"] = len(states), len(items)
        for kind in sorted({str(r["kind"]) for r in items}):  # dead_family, dead_image, ...
            metadata[f"dead_{kind}"] = sum(1 for r in items if r["kind"] == kind)
    newest = entries[0] if entries else None
    if newest is not None:  # what a person reads without opening the table
        metadata["newest_partition"] = newest[0]
        metadata["newest_error_class"] = newest[1]["error_class"] or "-"
        metadata["newest_reason"] = newest[2]
    metadata["list"] = dg.MetadataValue.md(
        "| partition | error | attempts | last failure | reason | run |\n"
        "|---|---|---|---|---|---|\n" + table
        if entries
        else "none"
    )
    what = f"{len(states)} partition(s)" + (f" and {len(items)} item(s)" if items else "")
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=check_name,
        passed=not entries,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=(
            f"{what} failed for good, newest {newest[0]}: {newest[2]}. "
            "Redrive with `sync-pipeline dead-letters redrive`."
            if newest is not None
            else None
        ),
    )


def current_budget(db_url: str, prefix: str, now: float | None = None) -> list[WindowUsage]:
    """Usage of the source's current windows straight from the budget table.

    App-wide buckets are listed one by one; per-user buckets (``...:user:<id>``) are folded
    into one row per limit: the most used user's figures, so a glance shows the tightest.
    """
    from sync_pipeline.core.models import RateWindow

    now = time.time() if now is None else now
    with transaction(db_url) as s:
        rows = s.execute(
            select(RateWindow).where(
                RateWindow.bucket.like(f"{prefix}:%"),
                RateWindow.window_start <= now,
                RateWindow.window_start + RateWindow.window_seconds > now,
            )
        ).scalars()
        tightest: dict[str, WindowUsage] = {}
        for r in rows:
            name = r.bucket.split(":user:")[0] + (":per-user" if ":user:" in r.bucket else "")
            usage = WindowUsage(
                bucket=name, used=r.used, limit=r.limit, resets_at=r.window_start + r.window_seconds
            )
            old = tightest.get(name)
            if old is None or usage.left < old.left:
                tightest[name] = usage
    return sorted(tightest.values(), key=lambda u: u.bucket)


def needs_reconnect_connections(db_url: str, platform: str) -> int:
    """Platform connections waiting for their user to authorize again."""
    from sync_pipeline.core.models import PlatformConnection

    with transaction(db_url) as s:
        return int(
            s.scalar(
                select(func.count()).where(
                    PlatformConnection.platform == platform,
                    PlatformConnection.state == "needs_reconnect",
                )
            )
            or 0
        )


def metadata_digest(metadata: Any) -> str:
    """A short digest of event metadata (values of MetadataValue objects, keys sorted)."""
    plain = {str(k): getattr(v, "value", v) for k, v in dict(metadata or {}).items()}
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def health_events(
    cursor: str | None,
    observation: dg.AssetObservation,
    check: dg.AssetCheckEvaluation,
    *,
    now: float | None = None,
    max_age_seconds: float = HEALTH_OBSERVATION_MAX_AGE_SECONDS,
) -> dg.SensorResult | dg.SkipReason:
    """A health sensor's result: only the events that say something new.

    The cursor keeps a digest of the last emitted observation's metadata (and when it was
    emitted) and of the last check evaluation. The observation is emitted when a figure
    changed or the last one is `max_age_seconds` old; the check evaluation only when its
    result changed (passed, count or list). Nothing new: a skip, the cursor stays. The UI
    shows the latest observation and evaluation either way.
    """
    now = time.time() if now is None else now
    try:
        last = json.loads(cursor) if cursor else {}
    except ValueError:
        last = {}
    if not isinstance(last, dict):
        last = {}
    observed = metadata_digest(observation.metadata)
    checked = metadata_digest({**check.metadata, "__passed": check.passed})
    events: list[dg.AssetObservation | dg.AssetCheckEvaluation] = []
    observed_at = last.get("observed_at")
    stale = not isinstance(observed_at, int | float) or now - observed_at >= max_age_seconds
    if last.get("observed") != observed or stale:
        events.append(observation)
        observed_at = now
    if last.get("checked") != checked:
        events.append(check)
    if not events:
        age = now - float(observed_at or now)
        return dg.SkipReason(
            f"figures and dead letters unchanged; observed {age / 60:.0f} min ago, again "
            f"within {max(0.0, max_age_seconds - age) / 60:.0f} min unless a figure changes"
        )
    new_cursor = {"observed": observed, "observed_at": observed_at, "checked": checked}
    return dg.SensorResult(asset_events=events, cursor=json.dumps(new_cursor, sort_keys=True))
