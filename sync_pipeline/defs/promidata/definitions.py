"""Promidata resources, configured from `PROMIDATA_*` variables when the code location loads."""

import os

import dagster as dg

from sync_pipeline.defs.promidata.resources import promidata_from_env
from sync_pipeline.defs.promidata.storage import storage_from_env


@dg.definitions
def promidata_resources() -> dg.Definitions:
    """The catalog host and the image store (a directory under SYNC_HOME by default)."""
    env = dict(os.environ)
    home = env.get("SYNC_HOME", ".sync_home")
    return dg.Definitions(
        resources={
            "promidata": promidata_from_env(env),
            "promidata_image_storage": storage_from_env(env, home),
        }
    )
