"""Token store: one refresh across processes, rejected refreshes, key rotation."""

from __future__ import annotations

import multiprocessing as mp
import queue
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier

import pytest
from sqlalchemy import select

from sync_pipeline.core import tokens as tokens_module
from sync_pipeline.core.crypto import TokenCipher, generate_key
from sync_pipeline.core.db import transaction
from sync_pipeline.core.errors import AuthRevokedError, ConfigError
from sync_pipeline.core.models import Athlete, OAuthToken
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.tokens import TokenSet, TokenStore, forget_cached_tokens
from sync_pipeline.defs.strava.resources import PROVIDER, StravaResource
from sync_pipeline.defs.strava.sync import mark_needs_reconnect
from sync_pipeline_tests.conftest import CLIENT_ID, CLIENT_SECRET, Sandbox, connect

WORKER_TIMEOUT = 60.0


@dataclass(frozen=True)
class StravaSettings:
    """Picklable settings a child process builds its own StravaResource from."""

    db_url: str
    token_key: str
    base_url: str
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET

    def resource(self) -> StravaResource:
        return StravaResource(
            app_db=AppDatabaseResource(url=self.db_url, token_key=self.token_key),
            client_id=self.client_id,
            client_secret=self.client_secret,
            base_url=self.base_url,
            timeout_seconds=10.0,
            connect_timeout_seconds=5.0,
        )


@dataclass(frozen=True)
class WorkerResult:
    """What one process saw: the access token it got, or the error it hit."""

    token: str | None
    error: str | None


def _refresh_worker(
    settings: StravaSettings, athlete_id: int, barrier: Barrier, results: mp.Queue
) -> None:
    """Wait for the other process, then get a token and call the API like a sync does."""
    strava = settings.resource()
    try:
        store = strava.app_db.tokens(PROVIDER)
        barrier.wait(timeout=WORKER_TIMEOUT)
        try:
            token = store.access_token(
                str(athlete_id), strava.refresh, margin=strava.token_refresh_margin_seconds
            )
            strava.get_athlete(athlete_id)
        except AuthRevokedError as exc:
            # The handling sync_athlete applies to a rejected refresh.
            mark_needs_reconnect(settings.db_url, athlete_id, str(exc))
            raise
        results.put(WorkerResult(token=token, error=None))
    except BaseException as exc:
        results.put(WorkerResult(token=None, error=f"{type(exc).__name__}: {exc}"))
    finally:
        strava.close()


def _expire(db_url: str, athlete_id: int) -> None:
    with transaction(db_url) as s:
        row = s.get(OAuthToken, (PROVIDER, str(athlete_id)))
        assert row is not None
        row.expires_at = 0
    forget_cached_tokens()  # a hand edit: this process would trust its cache for a minute


def _oauth_token_posts(sandbox: Sandbox) -> int:
    return int(sandbox.state.stats()["requests_by_endpoint"].get("POST /oauth/token", 0))


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_refresh_from_two_processes_refreshes_once(
    round_: int, strava: StravaResource, sandbox: Sandbox
) -> None:
    athlete = connect(strava, sandbox, 3)
    store = strava.app_db.tokens(PROVIDER)
    before = store.get(str(athlete))
    assert before is not None
    _expire(strava.app_db.url, athlete)
    sandbox.state.reset_stats()
    settings = StravaSettings(strava.app_db.url, strava.app_db.token_key, sandbox.url)

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    results: mp.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=_refresh_worker, args=(settings, athlete, barrier, results))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=WORKER_TIMEOUT) for _ in procs]
    except queue.Empty:
        pytest.fail("a refresh worker did not report within the deadline")
    finally:
        for p in procs:
            p.join(WORKER_TIMEOUT)
            if p.is_alive():
                p.kill()
                p.join()
        results.close()
        results.join_thread()

    assert [r.error for r in got] == [None, None]
    assert all(p.exitcode == 0 for p in procs)
    tokens = {r.token for r in got}
    assert len(tokens) == 1
    assert sandbox.state.stats()["refreshes"] == 1
    assert _oauth_token_posts(sandbox) == 1
    after = store.get(str(athlete))
    assert after is not None
    assert tokens == {after.access_token}
    assert after.refresh_token != before.refresh_token  # the rotation was persisted
    assert after.expires_at is not None and after.expires_at > 0
    with transaction(strava.app_db.url) as s:
        row = s.get(Athlete, athlete)
        assert row is not None and row.state == "connected", row.state_reason if row else None
    # The stored token is the one Strava considers valid now.
    sandbox.state.reset_stats()
    assert strava.get_athlete(athlete)["id"] == athlete
    assert sandbox.state.stats()["refreshes"] == 0


@pytest.mark.parametrize(
    ("expired", "api_calls"),
    [
        pytest.param(True, 0, id="expired-token-refreshed-up-front"),
        pytest.param(False, 1, id="valid-token-rejected-then-refreshed"),
    ],
)
def test_rejected_refresh_raises_auth_revoked_without_retry(
    expired: bool, api_calls: int, strava: StravaResource, sandbox: Sandbox
) -> None:
    athlete = connect(strava, sandbox, 3)
    if expired:
        _expire(strava.app_db.url, athlete)
    sandbox.state.inject_fault("revoked", athlete_id=athlete)
    sandbox.state.reset_stats()

    with pytest.raises(AuthRevokedError, match="reconnect"):
        strava.get_athlete(athlete)

    stats = sandbox.state.stats()
    assert _oauth_token_posts(sandbox) == 1
    assert stats["refreshes"] == 0
    assert stats["requests_by_endpoint"].get("GET /api/v3/athlete", 0) == api_calls
    assert stats["responses_by_status"].get("401", 0) == api_calls


def _tokens() -> TokenSet:
    return TokenSet("access-abc", "refresh-xyz", 2_000_000_000, "read,activity:read_all")


def test_tokens_encrypted_with_old_key_are_readable_after_rotation(db_url: str) -> None:
    key_a, key_b = generate_key(), generate_key()
    TokenStore(db_url, TokenCipher(key_a), PROVIDER).save("7", _tokens())

    rotated = TokenStore(db_url, TokenCipher(f"{key_b},{key_a}"), PROVIDER)
    assert rotated.get("7") == _tokens()

    # New writes use the first key: after re-saving, key B alone reads them.
    rotated.save("7", _tokens())
    assert TokenStore(db_url, TokenCipher(key_b), PROVIDER).get("7") == _tokens()
    with transaction(db_url) as s:
        raw = s.execute(select(OAuthToken.access_token_enc)).scalar_one()
    assert b"access-abc" not in raw


def test_wrong_key_gives_a_helpful_config_error(db_url: str) -> None:
    TokenStore(db_url, TokenCipher(generate_key()), PROVIDER).save("7", _tokens())
    wrong = TokenStore(db_url, TokenCipher(generate_key()), PROVIDER)

    with pytest.raises(ConfigError, match="SYNC_TOKEN_KEY") as info:
        wrong.get("7")
    assert "old key" in str(info.value)
    assert "comma-separated" in str(info.value)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        pytest.param("", "No token encryption key", id="empty"),
        pytest.param(" , ", "No token encryption key", id="only-separators"),
        pytest.param("not-a-fernet-key", "not a valid key", id="malformed"),
    ],
)
def test_unusable_key_configuration_is_a_config_error(keys: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        TokenCipher(keys)
    assert "sync-pipeline keygen" in str(info.value)


def _never_refresh(tokens: TokenSet) -> TokenSet:
    raise AssertionError("no refresh expected")


def _replace_access_token(db_url: str, store: TokenStore, token: str) -> None:
    """What another process refreshing the account would leave in the database."""
    with transaction(db_url) as s:
        row = s.get(OAuthToken, (PROVIDER, "7"))
        assert row is not None
        row.access_token_enc = store._cipher.encrypt(token)


def test_access_token_is_cached_for_a_minute_then_reread(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TokenStore(db_url, TokenCipher(generate_key()), PROVIDER)
    store.save("7", _tokens())
    assert store.access_token("7", _never_refresh) == "access-abc"
    _replace_access_token(db_url, store, "access-from-elsewhere")
    # Within the cache lifetime this process keeps its token (a 401 would force a re-read)...
    assert store.access_token("7", _never_refresh) == "access-abc"
    # ...and picks up the replacement once the entry is older than CACHE_SECONDS.
    monkeypatch.setattr(tokens_module, "CACHE_SECONDS", 0.0)
    assert store.access_token("7", _never_refresh) == "access-from-elsewhere"


def test_deleted_tokens_are_not_served_from_the_cache(db_url: str) -> None:
    store = TokenStore(db_url, TokenCipher(generate_key()), PROVIDER)
    store.save("7", _tokens())
    assert store.access_token("7", _never_refresh) == "access-abc"
    assert store.delete("7")
    with pytest.raises(AuthRevokedError, match="connect again"):
        store.access_token("7", _never_refresh)


def test_a_rejected_token_bypasses_the_cache(db_url: str) -> None:
    store = TokenStore(db_url, TokenCipher(generate_key()), PROVIDER)
    store.save("7", _tokens())
    assert store.access_token("7", _never_refresh) == "access-abc"
    _replace_access_token(db_url, store, "access-from-elsewhere")
    # The provider rejected access-abc: the row's newer token is used, without a refresh.
    assert (
        store.access_token("7", _never_refresh, force=True, stale_token="access-abc")
        == "access-from-elsewhere"
    )
