"""Queueing runs: through the Dagster webserver's GraphQL API when one answers for this Dagster
home (the run id comes back at once), else with `dagster job launch` (it loads the code)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import click
import httpx
import yaml

from sync_pipeline.cli import context, devstack
from sync_pipeline.core import priorities
from sync_pipeline.core.settings import Settings

#: Colour codes in Dagster's log lines (shown when a launch fails).
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
#: The repository name Dagster gives a code location's one `Definitions`.
REPOSITORY_NAME = "__repository__"
#: The webserver's instance settings (`local_artifact_storage` names its Dagster home).
INSTANCE_QUERY = "{ instance { info } }"


def webserver_home(url: str) -> Path | str | None:
    """The webserver's Dagster home; None if nothing answers; else why it is not Dagster's."""
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/graphql",
            json={"query": INSTANCE_QUERY},
            timeout=httpx.Timeout(10.0, connect=2.0),
        )
    except httpx.TransportError:
        return None
    try:
        info = response.json()["data"]["instance"]["info"]
        base_dir = (yaml.safe_load(info) or {})["local_artifact_storage"]["config"]["base_dir"]
    except (ValueError, KeyError, TypeError, yaml.YAMLError):
        return f"it answered HTTP {response.status_code} without its Dagster instance settings"
    return Path(base_dir).resolve()


def submit_to_webserver(
    s: Settings, job: str, *, tags: dict[str, str], run_config: dict[str, Any]
) -> str | None:
    """Queue through the webserver of this Dagster home; None (said on stderr) if none answers."""
    from urllib.parse import urlsplit

    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    url = s.webserver_url
    home = context.dagster_home(s)
    found = webserver_home(url)
    if not isinstance(found, Path) or found != home:
        why = (
            "no Dagster webserver answers there"
            if found is None
            else f"it serves another Dagster home ({found})"
            if isinstance(found, Path)
            else found
        )
        click.echo(
            f"DAGSTER_WEBSERVER_URL={url}: {why}; queueing with `dagster job launch` instead "
            "(slower: a process of its own)",
            err=True,
        )
        return None
    parts = urlsplit(url)
    client = DagsterGraphQLClient(
        parts.hostname or "127.0.0.1",
        port_number=parts.port,
        use_https=parts.scheme == "https",
        path_prefix=parts.path.rstrip("/"),
        timeout=60,
    )
    try:
        return client.submit_job_execution(
            job,
            repository_location_name=context.code_location_name(),
            repository_name=REPOSITORY_NAME,
            run_config=run_config,
            tags=tags,
        )
    except DagsterGraphQLClientError as exc:
        cause = exc.__cause__  # the client's own message repeats the whole query
        detail = f"{cause}" if cause is not None else ": ".join(str(a) for a in exc.args)
        raise click.ClickException(
            f"The Dagster webserver at {url} did not queue {job}: {detail}"
        ) from exc


def launch(
    s: Settings,
    job: str,
    *,
    tags: dict[str, str],
    run_config: dict[str, Any],
    grpc_host: str | None = None,
    grpc_port: int | None = None,
) -> str:
    """Queue a run; return its run id.

    Through the webserver at DAGSTER_WEBSERVER_URL when it serves this Dagster home (see
    `submit_to_webserver`), else with `dagster job launch` (the same path a person uses): that
    launch sees exactly this command's settings: an explicit environment (DAGSTER_HOME
    etc. as resolved here), run from the Dagster home, never from the project root, whose
    `.env` Dagster would load over that environment. The code location comes from the
    project's workspace.yaml (a code server is spawned for the launch), or from a running code
    server: `grpc_host`/`grpc_port`, else SYNC_CODE_SERVER=host:port. Dagster's own output is
    shown only when the launch fails.
    """
    if grpc_host is None and grpc_port is None:
        submitted = submit_to_webserver(s, job, tags=tags, run_config=run_config)
        if submitted is not None:
            return submitted
    env = context.launch_env(s)
    home = Path(env["DAGSTER_HOME"])
    if (home / ".env").exists():
        raise click.ClickException(
            f"{home / '.env'} would override the settings of `dagster job launch`, which runs "
            "in the Dagster home; move that file out of the Dagster home."
        )
    named_by = "grpc_host/grpc_port"
    if grpc_host is None and grpc_port is None and (found := context.code_server()):
        (grpc_host, grpc_port), named_by = found, context.CODE_SERVER_VARIABLE
    elif grpc_host is None and grpc_port is None and (found := devstack.running_code_server(s)):
        (grpc_host, grpc_port), named_by = found, "the running `sync-pipeline dev`"
    run_id = str(uuid.uuid4())
    with tempfile.TemporaryDirectory(prefix="sync-pipeline-launch-") as tmp:
        if grpc_port is None:
            workspace, source = context.workspace_file(), "the project's workspace.yaml"
        else:
            host = grpc_host or "localhost"
            workspace = code_server_workspace(Path(tmp), host, grpc_port, named_by)
            source = f"the code server at {host}:{grpc_port} ({named_by})"
        cmd = [
            sys.executable,
            "-m",
            "dagster",
            "job",
            "launch",
            "-w",
            str(workspace),
            "-j",
            job,
            "--run-id",
            run_id,
            "--tags",
            json.dumps(tags),
            "--config-json",
            json.dumps(run_config),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=home, env=env, check=False)
    if proc.returncode != 0:
        output = ANSI_ESCAPE.sub("", "\n".join((proc.stdout.strip(), proc.stderr.strip())))
        tail = "\n".join(output.strip().splitlines()[-40:])[-4000:]
        raise click.ClickException(
            f"Could not queue {job} (`dagster job launch` with {source}, Dagster home {home}, "
            f"exit {proc.returncode}); the end of Dagster's output:\n{tail}"
        )
    return run_id


def code_server_workspace(directory: Path, host: str, port: int, named_by: str) -> Path:
    """A workspace file loading the project's code location from a running code server.

    The location keeps the name workspace.yaml gives it (`--grpc-host`/`--grpc-port` would
    name it `grpc:HOST:PORT`): the daemon finds a queued run's code by that name.
    """
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise click.ClickException(
            f"Cannot reach the Dagster code server at {host}:{port} ({exc}), named by "
            f"{named_by}. Start it (`dagster code-server start -m sync_pipeline.definitions "
            f"-h {host} -p {port}`, in the daemon's environment)"
            + (
                f" or unset {named_by} to load the code for each launch."
                if named_by == context.CODE_SERVER_VARIABLE
                else "."
            )
        ) from exc
    server = {"host": host, "port": port, "location_name": context.code_location_name()}
    path = directory / "workspace.yaml"
    path.write_text(json.dumps({"load_from": [{"grpc_server": server}]}))  # JSON is YAML
    return path


def echo_queued(run_id: str, job: str, tags: dict[str, str]) -> None:
    """One line per queued run: its id, what it syncs and where to follow it."""
    what = [job]
    if partition := tags.get("dagster/partition"):
        from sync_pipeline.sources import SOURCES

        declared = SOURCES.get(tags.get(priorities.SOURCE_TAG, ""))
        what.append(f"{declared.noun if declared else 'partition'} {partition}")
    what.append(f"priority {tags.get(priorities.PRIORITY_TAG, '0')}")
    click.echo(f"queued run {run_id} ({', '.join(what)}); follow it in the UI at /runs/{run_id}")


def queue(s: Settings, job: str, *, tags: dict[str, str], run_config: dict[str, Any]) -> str:
    """Launch a run and print its line; return its id."""
    run_id = launch(s, job, tags=tags, run_config=run_config)
    echo_queued(run_id, job, tags)
    return run_id
