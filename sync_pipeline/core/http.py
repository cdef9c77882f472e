"""HTTP mechanics every API client shares: one session, timeouts, transient retries.

Transient failures (5xx, timeouts, connection errors) are retried a few times in-process with
exponential backoff and jitter, honouring `Retry-After` when the provider sends one. Anything
longer is left to Dagster's RetryPolicy or to parking (see core.budget).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from sync_pipeline.core.errors import TransientError

USER_AGENT = "sync_pipeline/0.1"
# httpx logs every request URL at INFO; a few token endpoints (Instagram's) take secrets in
# the query string, so request logging stays off whatever level the host process sets.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)


class TransientHttpError(TransientError):
    """A retryable HTTP failure; `retry_after` is the provider's hint in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class CallStats:
    """Counters of one unit of work (one user's sync), for metadata."""

    calls: int = 0
    retries: int = 0
    rate_wait_seconds: float = 0.0
    not_modified: int = 0  # conditional requests answered 304 (free at GitHub)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(
        self, *, calls: int = 0, retries: int = 0, waited: float = 0.0, not_modified: int = 0
    ) -> None:
        """Thread-safe increment."""
        with self._lock:
            self.calls += calls
            self.retries += retries
            self.rate_wait_seconds += waited
            self.not_modified += not_modified


class DeadlineExceededError(TransientError):
    """A call's overall deadline passed (retries included); not retried in-process."""


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The `Retry-After` header in seconds (delta form only), if present."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def sent_at(response: httpx.Response) -> float:
    """Epoch time at which the request behind `response` was sent."""
    value = response.extensions.get(SENT_AT)
    return float(value) if value is not None else time.time()


SENT_AT = "sync_pipeline.sent_at"


class HttpSession:
    """A shared httpx client with explicit timeouts and bounded transient retries."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        connect_timeout: float,
        transient_retries: int,
        backoff_initial: float = 0.5,
        backoff_max: float = 20.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )
        self._retries = transient_retries
        self._backoff = wait_exponential_jitter(multiplier=backoff_initial, max=backoff_max)
        self._backoff_max = backoff_max

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientHttpError) and exc.retry_after is not None:
            return min(exc.retry_after, self._backoff_max)
        return float(self._backoff(state))

    def request(
        self,
        method: str,
        path: str,
        *,
        before_attempt: Callable[[], None] | None = None,
        stats: CallStats | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        json: Any = None,
        deadline: float | None = None,
    ) -> httpx.Response:
        """Send a request; 5xx and network errors are retried, other statuses returned.

        `deadline` (a `time.monotonic()` instant) bounds the whole call, retries included:
        each attempt's timeout shrinks to the time left, and none starts after it.
        """
        attempts = 0

        def attempt() -> httpx.Response:
            nonlocal attempts
            timeout: Any = httpx.USE_CLIENT_DEFAULT
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeadlineExceededError(f"{method} {path}: deadline passed")
                current = self._client.timeout
                timeout = httpx.Timeout(
                    min(current.read or left, left), connect=min(current.connect or left, left)
                )
            attempts += 1
            if before_attempt is not None:
                before_attempt()
            if stats is not None:
                stats.add(calls=1, retries=1 if attempts > 1 else 0)
            sent = time.time()
            try:
                response = self._client.request(
                    method,
                    path,
                    headers=headers,
                    params=params,
                    data=data,
                    json=json,
                    timeout=timeout,
                )
            except httpx.TimeoutException as exc:
                raise TransientHttpError(f"{method} {path}: timed out ({exc!r})") from exc
            except httpx.TransportError as exc:
                raise TransientHttpError(f"{method} {path}: connection failed ({exc!r})") from exc
            response.extensions[SENT_AT] = sent
            if response.status_code >= 500:
                raise TransientHttpError(
                    f"{method} {path}: HTTP {response.status_code} {response.text[:200]}",
                    retry_after=retry_after_seconds(response),
                )
            return response

        retrying = Retrying(
            retry=retry_if_exception_type(TransientHttpError),
            stop=stop_after_attempt(self._retries + 1),
            wait=self._wait,
            reraise=True,
        )
        return retrying(attempt)
