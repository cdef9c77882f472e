"""Definitions, one folder per source; loaded by `dg.load_from_defs_folder`."""
