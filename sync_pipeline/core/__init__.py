"""Shared mechanics written once: database, tokens, rate budget, checkpoints, HTTP."""
