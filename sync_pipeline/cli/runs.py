"""`sync-pipeline runs show|list`: what a run did, read from the Dagster instance."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click
import dagster as dg

from sync_pipeline.cli import context
from sync_pipeline.cli.context import SOURCES
from sync_pipeline.core.priorities import PRIORITY_TAG, SOURCE_TAG, TRIGGER_TAG

RETRY_NUMBER_TAG = "dagster/retry_number"
PARENT_RUN_TAG = "dagster/parent_run_id"
PARTITION_TAG = "dagster/partition"
#: `--status` names: Dagster's run statuses, and the words the other commands use.
STATUSES = {
    **{s.value.lower(): s for s in dg.DagsterRunStatus},
    "failed": dg.DagsterRunStatus.FAILURE,
    "succeeded": dg.DagsterRunStatus.SUCCESS,
    "running": dg.DagsterRunStatus.STARTED,
}
#: Events `runs show` reads (the run's log is not read whole: a sweep logs one per partition).
EVENTS = {
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.STEP_UP_FOR_RETRY,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.STEP_OUTPUT,
    dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
}


def _time(value: float | dt.datetime | None) -> str | None:
    """A timestamp (epoch seconds or datetime) as ISO 8601 UTC."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    return dt.datetime.fromtimestamp(value, dt.UTC).isoformat()


def _plain(metadata: Any) -> dict[str, Any]:
    """Event metadata as JSON-ready values."""
    out: dict[str, Any] = {}
    for key, value in dict(metadata or {}).items():
        raw = getattr(value, "value", value)
        out[str(key)] = (
            raw if isinstance(raw, str | int | float | bool) or raw is None else str(raw)
        )
    return out


def _error_text(error: Any) -> str | None:
    """An error's message without the exception's class name (Dagster's `Failure: ...`)."""
    while error is not None and error.cls_name == "RetryRequestedFromPolicy":
        error = error.cause  # a RetryPolicy retry: the step's own error is its cause
    if error is None:
        return None
    text = str(error.message).strip()
    name = str(getattr(error, "cls_name", "") or "")
    return text.removeprefix(f"dagster._core.definitions.events.{name}: ").removeprefix(f"{name}: ")


def _failures(logs: list[Any]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The run's failures (step reason: the `dg.Failure` description, else the error) and,
    per step, how many times it was retried inside the run (RetryPolicy) and why, last."""
    failures: list[dict[str, Any]] = []
    retries: dict[str, dict[str, Any]] = {}
    for entry in logs:
        event = entry.dagster_event
        if event is None:
            continue
        if event.is_step_up_for_retry:
            step = retries.setdefault(event.step_key or "?", {"retries": 0})
            step["retries"] += 1
            step["last_reason"] = _error_text(event.step_retry_data.error)
        elif event.is_step_failure:
            data = event.step_failure_data
            user = data.user_failure_data
            reason = user.description if user is not None and user.description else None
            failures.append(
                {
                    "step": event.step_key,
                    "reason": reason or _error_text(data.error),
                    "at": _time(entry.timestamp),
                }
            )
        elif event.is_run_failure and not failures:
            failures.append({"step": None, "reason": event.message, "at": _time(entry.timestamp)})
    return failures, retries


def _results(instance: dg.DagsterInstance, run_id: str, logs: list[Any]) -> dict[str, Any]:
    """What the run produced: per asset (partition) its materialization's figures, and per
    op the metadata of its output (a sweep's per-partition counts)."""
    result: dict[str, Any] = {}
    asset_steps: set[str] = set()
    for record in instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=100
    ).records:
        entry = record.event_log_entry
        mat = entry.asset_materialization
        if mat is None:
            continue
        name = mat.asset_key.to_user_string()
        result[f"{name}[{mat.partition}]" if mat.partition else name] = _plain(mat.metadata)
        asset_steps.add(mat.asset_key.path[-1])  # an asset's own step is named after it
    # Outputs of ops that are not an asset's own step (whose figures are its materialization):
    # a sweep op's counts.
    outputs = {
        entry.step_key: _plain(entry.dagster_event.step_output_data.metadata)
        for entry in logs
        if entry.dagster_event is not None
        and entry.dagster_event.is_successful_output
        and entry.dagster_event.step_output_data.metadata
        and entry.step_key not in asset_steps
    }
    return {"assets": result, "outputs": outputs}


def run_report(instance: dg.DagsterInstance, db_url: str, run_id: str) -> dict[str, Any] | None:
    """A run's state, partition, times, attempts, failure, results and progress; None when
    the instance does not know the run."""
    from sync_pipeline.sources import SOURCES as REGISTRY

    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return None
    run = record.dagster_run
    tags = dict(run.tags)
    logs = list(instance.all_logs(run_id, of_type=EVENTS))
    failures, step_retries = _failures(logs)
    started, ended = record.start_time, record.end_time
    selected = set(run.asset_selection or ()) | {
        entry.dagster_event.asset_key
        for entry in logs
        if entry.dagster_event is not None and entry.dagster_event.is_asset_materialization_planned
    }
    # The project's runs carry their source's tag; others (`dagster asset materialize`, an
    # asset selection in the UI) are known by their job or the assets they materialize.
    declared = REGISTRY.get(tags.get(SOURCE_TAG, "")) or next(
        (
            d
            for d in REGISTRY.values()
            if run.job_name in (d.single_job_name, d.sweep_job_name) or d.asset_key in selected
        ),
        None,
    )
    source = declared.name if declared is not None else tags.get(SOURCE_TAG)
    progress = declared.progress_of(db_url, run_id) if declared is not None else []
    return {
        "run_id": run.run_id,
        "job": run.job_name,
        "status": run.status.value.lower(),
        "source": source,
        "partition": tags.get(PARTITION_TAG),
        "trigger": tags.get(TRIGGER_TAG),
        "priority": tags.get(PRIORITY_TAG),
        "created_at": _time(record.create_timestamp),
        "started_at": _time(started),
        "ended_at": _time(ended),
        "duration_seconds": round(ended - started, 3) if started and ended else None,
        "retry_number": int(tags.get(RETRY_NUMBER_TAG, 0)),
        "parent_run_id": tags.get(PARENT_RUN_TAG) or run.parent_run_id,
        "root_run_id": run.root_run_id,
        "step_retries": step_retries,
        "failures": failures,
        "result": _results(instance, run_id, logs),
        "progress": progress,
    }


def _print(report: dict[str, Any]) -> None:
    r = report
    click.echo(f"run {r['run_id']}: {r['status']}")
    click.echo(
        f"  job {r['job']}"
        + (f", {r['source']}" if r["source"] else "")
        + (f" partition {r['partition']}" if r["partition"] else "")
        + (f", trigger {r['trigger']}" if r["trigger"] else "")
        + (f", priority {r['priority']}" if r["priority"] is not None else "")
    )
    duration = f"{r['duration_seconds']:.1f} s" if r["duration_seconds"] is not None else "-"
    click.echo(
        f"  created {r['created_at']}, started {r['started_at'] or '-'}, "
        f"ended {r['ended_at'] or '-'} ({duration})"
    )
    attempt = f"  attempt {r['retry_number'] + 1}"
    if r["parent_run_id"]:
        attempt += f" (retry of run {r['parent_run_id']})"
    click.echo(attempt)
    for step, retried in sorted(r["step_retries"].items()):
        click.echo(f"  {step} retried {retried['retries']} time(s), last: {retried['last_reason']}")
    for f in r["failures"]:
        click.echo(f"  failed{' in ' + f['step'] if f['step'] else ''}: {f['reason']}")
    results = list({**r["result"]["assets"], **r["result"]["outputs"]}.items())
    shown = results if len(results) <= 12 else results[:6] + results[-3:]  # a sweep: many
    if len(shown) < len(results):
        click.echo(f"  ({len(results) - len(shown)} more results: --json lists them)")
    for name, md in shown:
        figures = ", ".join(
            f"{k}={v}" for k, v in md.items() if not isinstance(v, str) or len(v) < 80
        )
        click.echo(f"  {name}: {figures}")
    for p in r["progress"]:
        figures = ", ".join(f"{k}={v}" for k, v in sorted(p["figures"].items()))
        click.echo(
            f"  progress {p['partition']} {p['stage']}: {p['state']} {p['step']} "
            f"{p['done']}/{p['total']} ({p['percent']}%)" + (f" {figures}" if figures else "")
        )


@click.group()
def runs() -> None:
    """Runs of every source: one run's state, progress, result and failure; recent runs."""


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
def runs_show(run_id: str, as_json: bool) -> None:
    """A run's state, partition, times, attempts, failure reason, results and progress."""
    s = context.settings()
    db_url = context.app_db(s).url
    with context.dagster_instance(s) as instance:
        report = run_report(instance, db_url, run_id)
    if report is None:
        raise click.ClickException(
            f"no run {run_id} in the Dagster instance at {context.dagster_home(s)}; see "
            "`sync-pipeline runs list`."
        )
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    _print(report)


@runs.command("list")
@click.option("--source", type=click.Choice(SOURCES), help="Only this source's runs.")
@click.option("--status", type=click.Choice(list(STATUSES)), help="Only runs in this state.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
def runs_list(source: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """Recent runs, newest first: id, state, job, partition, created and duration."""
    s = context.settings()
    filters = dg.RunsFilter(
        tags={SOURCE_TAG: source} if source else {},
        statuses=[STATUSES[status]] if status else [],
    )
    with context.dagster_instance(s) as instance:
        records = instance.get_run_records(filters, limit=limit)
    rows = [
        {
            "run_id": r.dagster_run.run_id,
            "status": r.dagster_run.status.value.lower(),
            "job": r.dagster_run.job_name,
            "source": r.dagster_run.tags.get(SOURCE_TAG),
            "partition": r.dagster_run.tags.get(PARTITION_TAG),
            "created_at": _time(r.create_timestamp),
            "duration_seconds": (
                round(r.end_time - r.start_time, 3) if r.start_time and r.end_time else None
            ),
        }
        for r in records
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no runs")
    for row in rows:
        took = f"{row['duration_seconds']:.1f} s" if row["duration_seconds"] is not None else "-"
        click.echo(
            f"{row['run_id']} {row['status']:9} {row['job']}"
            + (f" [{row['partition']}]" if row["partition"] else "")
            + f" created {row['created_at']} ({took})"
        )
