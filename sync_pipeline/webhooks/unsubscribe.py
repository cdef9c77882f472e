"""The receiver's one-click unsubscribe route (RFC 8058) for outreach messages.

`POST /outreach/unsubscribe/{token}` with the body `List-Unsubscribe=One-Click` (form-encoded
or multipart, as RFC 8058 allows) unsubscribes the prospect the signed token names; `GET`
shows a page whose button makes that POST and changes nothing itself, since mail scanners
fetch every link. A malformed or forged token gets a 4xx and changes nothing.
"""

from __future__ import annotations

import html
import logging
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from sync_pipeline.defs.outreach.unsubscribe import (
    ONE_CLICK,
    UNSUBSCRIBE_PATH,
    InvalidTokenError,
    unsubscribe,
    verify_token,
)

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 4096
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"


class BadRequestError(ValueError):
    """A request the route refuses; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _page(status: int, title: str, text: str, form: bool = False) -> HTMLResponse:
    button = (
        '<form method="post">'
        f'<input type="hidden" name="{ONE_CLICK[0]}" value="{ONE_CLICK[1]}">'
        '<button type="submit">Unsubscribe</button></form>'
        if form
        else ""
    )
    body = (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{button}</body></html>"
    )
    return HTMLResponse(body, status, headers={"Cache-Control": "no-store"})


def form_fields(content_type: str, body: bytes) -> dict[str, list[str]]:
    """The fields of a form-encoded or multipart/form-data body."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == FORM:
        try:
            return parse_qs(body.decode("ascii"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise BadRequestError(400, "the form body is not ASCII") from None
    if media == MULTIPART:
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
        msg = BytesParser(_class=EmailMessage, policy=default_policy).parsebytes(head + body)
        if not msg.is_multipart():
            raise BadRequestError(400, "the multipart body cannot be parsed")
        fields: dict[str, list[str]] = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if isinstance(name, str):
                payload = part.get_payload(decode=True)
                value = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
                fields.setdefault(name, []).append(value.strip())
        return fields
    raise BadRequestError(415, f"Content-Type must be {FORM} or {MULTIPART} (RFC 8058)")


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise BadRequestError(413, f"the body must be at most {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BadRequestError(413, f"the body must be at most {MAX_BODY_BYTES} bytes")
    return bytes(body)


def unsubscribe_routes(db_url: str, key: str) -> list[Route]:
    """GET (confirmation page) and POST (one-click) on /outreach/unsubscribe/{token}."""
    if not key:
        raise ValueError("the unsubscribe key must not be empty")
    path = UNSUBSCRIBE_PATH

    def prospect_of(request: Request) -> str:
        try:
            return verify_token(key, str(request.path_params["token"]))
        except InvalidTokenError as exc:
            raise BadRequestError(403, str(exc)) from exc

    async def confirm(request: Request) -> Response:
        try:
            prospect_of(request)
        except BadRequestError as exc:
            return _page(exc.status, "Invalid unsubscribe link", exc.message)
        return _page(
            200,
            "Unsubscribe",
            "Press the button to stop receiving these e-mails.",
            form=True,
        )

    async def one_click(request: Request) -> Response:
        try:
            prospect_id = prospect_of(request)
            fields = form_fields(request.headers.get("content-type", ""), await _body(request))
            if fields.get(ONE_CLICK[0]) != [ONE_CLICK[1]]:
                raise BadRequestError(400, "the body must be List-Unsubscribe=One-Click (RFC 8058)")
        except ClientDisconnect:
            return _page(400, "Unsubscribe failed", "the client disconnected")
        except BadRequestError as exc:
            logger.warning(
                "unsubscribe from %s refused (%d): %s", _client(request), exc.status, exc.message
            )
            return _page(exc.status, "Unsubscribe failed", exc.message)
        before = await run_in_threadpool(unsubscribe, db_url, prospect_id, "one-click link")
        if before is None:
            return _page(200, "Unsubscribed", "This address is not on the list (any more).")
        if before != "unsubscribed":
            logger.info("prospect %s unsubscribed by its one-click link", prospect_id)
        return _page(200, "Unsubscribed", "You will not receive these e-mails any more.")

    return [
        Route(path, confirm, methods=["GET"]),
        Route(path, one_click, methods=["POST"]),
    ]


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"
