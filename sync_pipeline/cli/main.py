"""`sync-pipeline`: the project's own CLI (set-up, sandbox, athletes, syncs, status).

Each command group lives in a module of its own; this one is the entry point that joins them.
"""

from __future__ import annotations

import click

from sync_pipeline.cli.athletes import athletes
from sync_pipeline.cli.cleanup import cleanup
from sync_pipeline.cli.db import db_group
from sync_pipeline.cli.dead_letters import dead_letters
from sync_pipeline.cli.dev import dev
from sync_pipeline.cli.init import init, keygen
from sync_pipeline.cli.outreach import campaigns, outreach, prospects
from sync_pipeline.cli.runs import runs
from sync_pipeline.cli.sandbox import sandbox
from sync_pipeline.cli.status import status
from sync_pipeline.cli.suppliers import suppliers, sync_promidata
from sync_pipeline.cli.sync import sync
from sync_pipeline.cli.users import users
from sync_pipeline.cli.webhooks import webhooks
from sync_pipeline.core.settings import load_env_file


@click.group()
def cli() -> None:
    """Keep per-user data from rate-limited APIs in sync, orchestrated by Dagster."""
    # Settings: the environment, then `.env` in the working directory (`init` writes it). Load
    # it before any command reads a setting (some read os.environ directly, e.g. the webhook
    # verify token, the code server address, the sandbox ports).
    load_env_file()


for command in (
    init,
    keygen,
    db_group,
    sandbox,
    athletes,
    sync,
    dev,
    status,
    suppliers,
    dead_letters,
    runs,
    cleanup,
    users,
    webhooks,
):
    cli.add_command(command)
sync.add_command(sync_promidata)
cli.add_command(campaigns)
cli.add_command(prospects)
cli.add_command(outreach)

if __name__ == "__main__":
    cli()
