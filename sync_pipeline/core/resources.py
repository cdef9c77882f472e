"""The app database as a Dagster resource: schema check, tokens, budget, checkpoints."""

from __future__ import annotations

import datetime as dt

import dagster as dg
from pydantic import Field

from sync_pipeline.core import db
from sync_pipeline.core.budget import RateBudget
from sync_pipeline.core.checkpoints import Checkpoints
from sync_pipeline.core.crypto import TokenCipher
from sync_pipeline.core.tokens import TokenStore


class AppDatabaseResource(dg.ConfigurableResource):
    """The app database (SQLite file or PostgreSQL) holding users, data, tokens and sync state."""

    url: str = Field(description="SQLAlchemy URL, e.g. sqlite:///path/app.db or postgresql://...")
    token_key: str = Field(
        description="Fernet key(s) encrypting tokens at rest; comma-separate to rotate keys."
    )

    def check(self) -> None:
        """Fail clearly when the schema is behind the code."""
        db.check_schema(self.url)

    def tokens(self, provider: str) -> TokenStore:
        """The token store of one provider."""
        return TokenStore(self.url, TokenCipher(self.token_key), provider)

    def budget(self) -> RateBudget:
        """The shared rate budget."""
        return RateBudget(self.url)

    def checkpoints(self, source: str, ttl: dt.timedelta | None = None) -> Checkpoints:
        """Sync state of one source's partitions (`ttl`: lease length renewed per page)."""
        return Checkpoints(self.url, source, ttl=ttl)
