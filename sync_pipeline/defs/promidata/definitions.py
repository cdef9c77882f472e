"""The Promidata image store, configured from `PROMIDATA_*` variables when the code location
loads (the catalog client is in the registry's `build_resources`)."""

import os

import dagster as dg

from sync_pipeline.defs.promidata.storage import storage_from_env


@dg.definitions
def defs() -> dg.Definitions:
    """The image store: a directory under SYNC_HOME by default, or S3 (PROMIDATA_S3_*)."""
    env = dict(os.environ)
    home = env.get("SYNC_HOME", ".sync_home")
    return dg.Definitions(
        resources={
            "promidata_image_storage": storage_from_env(env, home),
        }
    )
