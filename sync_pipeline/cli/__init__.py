"""The `sync-pipeline` command line."""
