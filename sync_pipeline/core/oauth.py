"""The browser side of OAuth authorization-code flows, for every provider.

`capture_redirect` starts a one-shot callback server on loopback, sends the user (or, with a
sandbox, an auto-approving HTTP client) to the provider's consent page, and returns the query
of the redirect. Codes never reach a log.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import queue
import secrets
import threading
from collections.abc import Callable
from urllib.parse import parse_qs, urlparse

import httpx

from sync_pipeline.core.errors import AuthRevokedError, ConfigError


class _CallbackHandler(http.server.BaseHTTPRequestHandler):
    results: queue.Queue[dict[str, str]]
    provider: str

    def do_GET(self) -> None:
        query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
        self.results.put(query)
        ok = "code" in query
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        self.wfile.write(
            b"Connected. You can close this tab.\n"
            if ok
            else f"{self.provider} did not authorize: {query.get('error', 'no code')}\n".encode()
        )

    def log_message(self, format: str, *args: object) -> None:  # quiet; never log codes
        return


def capture_redirect(
    provider: str,
    consent_url: Callable[[str], str],
    *,
    auto_approve: bool,
    on_url: Callable[[str], None] | None = None,
    redirect_host: str = "127.0.0.1",
    redirect_port: int = 0,
    timeout: float = 300.0,
) -> tuple[dict[str, str], str]:
    """Run the consent step; returns (redirect query, redirect_uri) with a `code` in it.

    `consent_url(redirect_uri)` builds the provider's authorize URL. With `auto_approve`
    (sandboxes only) this process plays the browser and follows the redirect; otherwise
    `on_url(url)` shows the URL to a person and the flow waits for the redirect.
    """
    results: queue.Queue[dict[str, str]] = queue.Queue()
    handler = type("Handler", (_CallbackHandler,), {"results": results, "provider": provider})
    server = http.server.ThreadingHTTPServer((redirect_host, redirect_port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        redirect_uri = f"http://{redirect_host}:{port}/{provider.lower()}/callback"
        url = consent_url(redirect_uri)
        if auto_approve:
            with httpx.Client(follow_redirects=True, timeout=30) as browser:
                response = browser.get(url)
            if response.status_code >= 400 and results.empty():
                raise ConfigError(
                    f"{provider}'s consent page answered HTTP {response.status_code}: "
                    f"{response.text[:200]} — check the client id and base URL settings."
                )
        elif on_url is not None:
            on_url(url)
        try:
            query = results.get(timeout=timeout)
        except queue.Empty as exc:
            raise ConfigError(f"No OAuth redirect arrived within {timeout:.0f} s.") from exc
    finally:
        server.shutdown()
        server.server_close()
    if "code" not in query:
        raise AuthRevokedError(f"{provider} did not authorize the app: {query.get('error', '?')}")
    return query, redirect_uri


def pkce_pair() -> tuple[str, str]:
    """A PKCE (verifier, S256 challenge) pair (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge
