"""Resource bindings of the code location: the app database and every source's client."""

import dagster as dg

from sync_pipeline.sources import build_resources

defs = dg.Definitions(resources=build_resources())
