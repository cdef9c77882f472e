"""Definitions, one folder per source; merged by `sync_pipeline/definitions.py`."""
