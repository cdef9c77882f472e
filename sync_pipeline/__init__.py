"""sync_pipeline: keep per-user data from rate-limited APIs in sync, orchestrated by Dagster."""
