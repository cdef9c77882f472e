"""OAuth token store: encrypted at rest, refreshed once under a row lock, safe across hosts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, select, update

from sync_pipeline.core.crypto import TokenCipher
from sync_pipeline.core.db import transaction
from sync_pipeline.core.errors import AuthRevokedError
from sync_pipeline.core.models import OAuthToken


@dataclass(frozen=True)
class TokenSet:
    """Plaintext tokens as a provider hands them out (never logged)."""

    access_token: str
    refresh_token: str | None
    expires_at: int | None
    scopes: str = ""

    def __repr__(self) -> str:
        return f"TokenSet(expires_at={self.expires_at}, scopes={self.scopes!r})"

    def fresh(self, now: float, margin: float) -> bool:
        """Usable for at least `margin` more seconds."""
        return self.expires_at is None or self.expires_at - margin > now


Refresher = Callable[[TokenSet], TokenSet]
"""Calls the provider with the stored tokens (refresh token, or the long-lived access token
itself for providers such as Instagram) and returns the new set."""


def refresh_token_of(tokens: TokenSet, provider: str) -> str:
    """The refresh token a refresher needs, or AuthRevokedError telling the user to reconnect."""
    if not tokens.refresh_token:
        raise AuthRevokedError(f"{provider} account has no refresh token: reconnect it.")
    return tokens.refresh_token


# Access tokens this process read or wrote last, by (database, provider, account): a sync
# makes several calls per account, and reading + decrypting the row for each one was a fifth
# of an incremental sync's CPU. An entry is trusted for CACHE_SECONDS at most, so a token
# replaced or deleted by another process is picked up soon (a rejected one at once).
CACHE_SECONDS = 60.0
_CacheKey = tuple[str, str, str]
_cache: dict[_CacheKey, tuple[float, TokenSet]] = {}
_MAX_CACHED = 10_000


def forget_cached_tokens() -> None:
    """Drop this process's cached access tokens (after editing token rows by hand)."""
    _cache.clear()


class TokenStore:
    """Tokens of one provider's accounts in the app database."""

    def __init__(self, db_url: str, cipher: TokenCipher, provider: str) -> None:
        self._db_url = db_url
        self._cipher = cipher
        self.provider = provider

    def save(self, account_id: str, tokens: TokenSet) -> None:
        """Insert or replace an account's tokens."""
        with transaction(self._db_url) as s:
            row = s.get(OAuthToken, (self.provider, account_id))
            if row is None:
                row = OAuthToken(provider=self.provider, account_id=account_id, version=0)
                s.add(row)
            self._write(row, tokens)
        self._cached(account_id, tokens)

    def get(self, account_id: str) -> TokenSet | None:
        """The stored tokens, decrypted, or None."""
        with transaction(self._db_url) as s:
            row = s.get(OAuthToken, (self.provider, account_id))
            return None if row is None else self._read(row)

    def delete(self, account_id: str) -> bool:
        """Forget an account's tokens; True if there were any."""
        with transaction(self._db_url) as s:
            result = s.execute(
                delete(OAuthToken).where(
                    OAuthToken.provider == self.provider, OAuthToken.account_id == account_id
                )
            )
            deleted = bool(getattr(result, "rowcount", 0))
        _cache.pop(self._key(account_id), None)
        return deleted

    def access_token(
        self,
        account_id: str,
        refresher: Refresher,
        *,
        margin: float = 300.0,
        force: bool = False,
        stale_token: str | None = None,
    ) -> str:
        """A valid access token, refreshing it first when it expires within `margin` seconds.

        The refresh runs while holding a write lock on the token row (a row lock on
        PostgreSQL, the write lock on SQLite), so when several processes find the token
        expired at once exactly one calls the provider and the others use its result.
        Refreshers must be quick and must not retry (one short-timeout attempt): on SQLite
        the lock blocks every writer, whose busy timeout must outlast the refresh call.
        `force` with `stale_token` refreshes a token the provider rejected, unless another
        process has already replaced it.
        """
        hit = _cache.get(self._key(account_id))
        now = time.time()
        if hit and not force and hit[0] + CACHE_SECONDS > now and hit[1].fresh(now, margin):
            return hit[1].access_token
        current = self.get(account_id)
        if current is None:
            _cache.pop(self._key(account_id), None)
            raise AuthRevokedError(
                f"No {self.provider} tokens stored for account {account_id}: "
                "the user must connect again."
            )
        if not force and current.fresh(time.time(), margin):
            self._cached(account_id, current)
            return current.access_token
        with transaction(self._db_url) as s:
            # Take the lock first: a no-op write locks the row (PostgreSQL) or the database
            # (SQLite) until commit, so the re-read below sees any concurrent refresh.
            s.execute(
                update(OAuthToken)
                .where(OAuthToken.provider == self.provider, OAuthToken.account_id == account_id)
                .values(version=OAuthToken.version)
            )
            row = s.execute(
                select(OAuthToken).where(
                    OAuthToken.provider == self.provider, OAuthToken.account_id == account_id
                )
            ).scalar_one_or_none()
            if row is None:
                raise AuthRevokedError(
                    f"{self.provider} account {account_id} was disconnected during the sync."
                )
            locked = self._read(row)
            replaced = stale_token is not None and locked.access_token != stale_token
            if replaced or (not force and locked.fresh(time.time(), margin)):
                self._cached(account_id, locked)
                return locked.access_token
            fresh = refresher(locked)
            if fresh.refresh_token is None:
                # Providers that do not rotate keep the old refresh token valid.
                fresh = TokenSet(
                    fresh.access_token, locked.refresh_token, fresh.expires_at, fresh.scopes
                )
            if not fresh.scopes:
                fresh = TokenSet(
                    fresh.access_token, fresh.refresh_token, fresh.expires_at, locked.scopes
                )
            self._write(row, fresh)
            row.version = (row.version or 0) + 1
        self._cached(account_id, fresh)  # after the commit: never a token that was rolled back
        return fresh.access_token

    def _key(self, account_id: str) -> _CacheKey:
        return (self._db_url, self.provider, account_id)

    def _cached(self, account_id: str, tokens: TokenSet) -> None:
        if len(_cache) >= _MAX_CACHED:
            _cache.clear()
        # Only what a call needs: the refresh token is read from the database when used.
        access_only = TokenSet(tokens.access_token, None, tokens.expires_at, tokens.scopes)
        _cache[self._key(account_id)] = (time.time(), access_only)

    def _write(self, row: OAuthToken, tokens: TokenSet) -> None:
        row.access_token_enc = self._cipher.encrypt(tokens.access_token)
        row.refresh_token_enc = (
            self._cipher.encrypt(tokens.refresh_token) if tokens.refresh_token else None
        )
        row.expires_at = tokens.expires_at
        row.scopes = tokens.scopes

    def _read(self, row: OAuthToken) -> TokenSet:
        return TokenSet(
            access_token=self._cipher.decrypt(row.access_token_enc),
            refresh_token=(
                self._cipher.decrypt(row.refresh_token_enc) if row.refresh_token_enc else None
            ),
            expires_at=row.expires_at,
            scopes=row.scopes,
        )
