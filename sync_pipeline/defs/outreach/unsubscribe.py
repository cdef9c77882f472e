"""One-click unsubscribe (RFC 8058): signed links per prospect and the state change they make.

Every message's `List-Unsubscribe` URL carries a token naming the prospect, signed with
HMAC-SHA256 under OUTREACH_UNSUBSCRIBE_KEY: nobody can unsubscribe another prospect by guessing
ids, and the token is checked in constant time. The webhook receiver
(`sync-pipeline webhooks serve`) serves the URL: `POST` with the body
`List-Unsubscribe=One-Click` unsubscribes, `GET` only shows a page with a button that posts
(mail scanners fetch links and must not unsubscribe anyone).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from sync_pipeline.core.db import transaction
from sync_pipeline.core.errors import ConfigError
from sync_pipeline.core.models import Prospect

KEY_VARIABLE = "OUTREACH_UNSUBSCRIBE_KEY"
#: What the receiver serves; `{token}` is replaced per prospect.
UNSUBSCRIBE_PATH = "/outreach/unsubscribe/{token}"
#: The POST body of RFC 8058 (as a form field: name List-Unsubscribe, value One-Click).
ONE_CLICK = ("List-Unsubscribe", "One-Click")
_PURPOSE = b"sync-pipeline outreach unsubscribe\x00"
_MAC_BYTES = 16
_MAX_ID_BYTES = 256


class InvalidTokenError(ValueError):
    """The link is malformed or its signature does not match (forged or from another key)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidTokenError("the unsubscribe link is malformed") from exc


def _mac(key: str, prospect_id: bytes) -> bytes:
    if not key:
        raise ConfigError(
            f"{KEY_VARIABLE} is not set: choose a random secret (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`) and put it in .env; the send job and the "
            "receiver (`sync-pipeline webhooks serve`) must use the same one."
        )
    return hmac.new(key.encode(), _PURPOSE + prospect_id, hashlib.sha256).digest()[:_MAC_BYTES]


def unsubscribe_token(key: str, prospect_id: str) -> str:
    """The prospect's token: its id and an HMAC of it, both base64url (URL-safe)."""
    raw = prospect_id.encode()
    return f"{_b64(raw)}.{_b64(_mac(key, raw))}"


def verify_token(key: str, token: str) -> str:
    """The prospect id a token names; InvalidTokenError unless its signature matches."""
    encoded_id, dot, encoded_mac = token.partition(".")
    if not dot or not encoded_id or not encoded_mac or len(token) > 2 * _MAX_ID_BYTES:
        raise InvalidTokenError("the unsubscribe link is malformed")
    raw = _unb64(encoded_id)
    if not hmac.compare_digest(_unb64(encoded_mac), _mac(key, raw)):
        raise InvalidTokenError("the unsubscribe link is not valid (its signature does not match)")
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:  # unreachable with a matching MAC; kept for safety
        raise InvalidTokenError("the unsubscribe link is malformed") from exc


def unsubscribe_url(template: str, key: str, prospect_id: str) -> str:
    """OUTREACH_UNSUBSCRIBE_URL with the prospect's token in place of `{token}`."""
    return template.format(token=unsubscribe_token(key, prospect_id))


def unsubscribe(db_url: str, prospect_id: str, how: str) -> str | None:
    """Mark the prospect unsubscribed (never e-mailed again); returns its earlier state, None
    when it does not exist. Idempotent: an unsubscribed prospect is left as it is."""
    with transaction(db_url) as s:
        prospect = s.get(Prospect, prospect_id, with_for_update=True)
        if prospect is None:
            return None
        before = prospect.state
        if before != "unsubscribed":
            prospect.state = "unsubscribed"
            prospect.state_reason = f"unsubscribed ({how})"
        return before
