"""The registry of sources and the resources they need: what Dagster and the CLI both read.

Adding a source: a folder under `defs/` with its client (`resources.py`), partitions and
declaration (`source.py`), a sandbox under `sandbox/`, and one line here.
"""

from collections.abc import Mapping
from typing import Any

from sync_pipeline.core.errors import ConfigError
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.settings import Env
from sync_pipeline.core.source import PartitionSet, SourceDefs, SyncSource, source_defs
from sync_pipeline.defs.github.source import GITHUB
from sync_pipeline.defs.instagram.source import INSTAGRAM
from sync_pipeline.defs.promidata.source import PROMIDATA
from sync_pipeline.defs.strava.source import STRAVA
from sync_pipeline.defs.x.source import X
from sync_pipeline.defs.youtube.source import YOUTUBE

SOURCES: dict[str, SyncSource] = {
    s.name: s for s in (STRAVA, GITHUB, YOUTUBE, X, INSTAGRAM, PROMIDATA)
}
#: The consistency tracker's platforms (sources syncing the `users` partition set).
PLATFORMS: tuple[str, ...] = tuple(n for n, s in SOURCES.items() if s.group == "consistency")


def source(name: str) -> SyncSource:
    """The source called `name`, or a clear error listing them."""
    try:
        return SOURCES[name]
    except KeyError:
        raise ConfigError(f"Unknown source {name!r}; choose one of {', '.join(SOURCES)}.") from None


def defs_of(name: str) -> SourceDefs:
    """The built definitions (asset, jobs, schedules, check) of a source."""
    return source_defs(source(name))


def partition_sets() -> list[tuple[PartitionSet, list[SyncSource]]]:
    """Each dynamic partition set with the sources that sync it."""
    sets: dict[str, tuple[PartitionSet, list[SyncSource]]] = {}
    for s in SOURCES.values():
        sets.setdefault(s.partitions.name, (s.partitions, []))[1].append(s)
    return list(sets.values())


def build_resources(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The app database and every source's client. Without `env` (the code location) the
    settings are Dagster `EnvVar`s read when a run starts; with it (the CLI) they are read now.
    """
    read = Env(env)
    app_db = AppDatabaseResource(url=read("SYNC_DATABASE_URL"), token_key=read("SYNC_TOKEN_KEY"))
    return {"app_db": app_db, **{n: s.resource(app_db, read) for n, s in SOURCES.items()}}
