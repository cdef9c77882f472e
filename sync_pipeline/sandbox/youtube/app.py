"""Starlette app serving the YouTube Data API v3, Google OAuth 2.0 and ``/_sandbox``.

One app answers for ``www.googleapis.com`` (``/youtube/v3/...``), ``accounts.google.com``
(``/o/oauth2/v2/auth``) and ``oauth2.googleapis.com`` (``/token``, ``/revoke``), so a client
may use the same base URL for its API and OAuth hosts. Google sends no rate-limit headers.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from sync_pipeline.sandbox.common import (
    Fault,
    apply_delay,
    basic_credentials,
    bearer,
    fault_guard,
    request_params,
    sandbox_app,
    with_query,
)
from sync_pipeline.sandbox.youtube import data
from sync_pipeline.sandbox.youtube.data import Channel
from sync_pipeline.sandbox.youtube.state import (
    DEFAULT_MAX_RESULTS,
    KNOWN_SCOPES,
    MAX_RESULTS,
    YOUTUBE_READ_SCOPES,
    GoogleApiError,
    YouTubeSandboxState,
    api_error,
    auth_error,
    quota_error,
)

Handler = Callable[[Request, Channel], Awaitable[Any]]

CHANNEL_PARTS = frozenset({"id", "snippet", "contentDetails", "statistics", "status"})
ITEM_PARTS = frozenset({"id", "snippet", "contentDetails", "status"})
_FAULT_MESSAGES = {
    500: ("Internal error encountered.", "backendError"),
    502: ("Bad Gateway", "backendError"),
    503: ("The service is currently unavailable.", "backendError"),
    504: ("Deadline expired before operation could complete.", "backendError"),
}
_ERROR_REASONS = {
    400: ("Bad Request", "badRequest"),
    401: ("Login Required", "required"),
    403: ("The caller does not have permission", "forbidden"),
    404: ("Requested entity was not found.", "notFound"),
    409: ("Conflict", "conflict"),
}


async def _form(request: Request) -> dict[str, str]:
    """Query string merged with a form or JSON body, plus HTTP Basic client credentials."""
    params = await request_params(request)
    scheme = request.headers.get("authorization", "").partition(" ")[0]
    if scheme.lower() == "basic":
        client_id, secret = basic_credentials(request) or ("", "")
        params.setdefault("client_id", client_id)
        params.setdefault("client_secret", secret)
    return params


def _page_token(playlist: str, offset: int) -> str:
    raw = f"PT:{offset}:{playlist}".encode()
    return "EAAa" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _page_offset(token: str, playlist: str) -> int | None:
    if not token.startswith("EAAa"):
        return None
    body = token[4:]
    try:
        decoded = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        tag, offset, owner = decoded.split(":", 2)
        value = int(offset)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if tag != "PT" or owner != playlist or value < 0:
        return None
    return value


def _parts(request: Request, allowed: frozenset[str]) -> set[str]:
    raw = request.query_params.get("part")
    if raw is None or not raw.strip():
        raise api_error(400, "Required parameter: part", "required", location="part")
    parts = {p.strip() for p in raw.split(",") if p.strip()}
    for part in sorted(parts):
        if part not in allowed:
            raise api_error(400, f"'{part}'", "unknownPart", domain="youtube.part", location="part")
    return parts


def _max_results(request: Request, default: int) -> int:
    raw = request.query_params.get("maxResults")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_RESULTS:
        raise api_error(
            400,
            f"Invalid value '{raw}'. Values must be within the range: [0, {MAX_RESULTS}]",
            "invalidParameter",
            location="maxResults",
        )
    return value


def create_app(state: YouTubeSandboxState) -> Starlette:
    """Build the ASGI app around ``state``."""

    finish = state.finish

    def error_response(exc: GoogleApiError) -> Response:
        return JSONResponse(exc.body, exc.status, headers=exc.headers)

    async def fire(fault: Fault, request: Request, oauth: bool) -> Response | None:
        """The response an injected fault produces; None lets the request go on (slow)."""
        proceed = await apply_delay(fault, request)
        if fault.kind == "slow" and proceed:
            return None
        if fault.kind == "timeout":
            status = 504
        elif fault.kind == "429":
            status = 429
        elif fault.kind == "5xx":
            status = fault.status or 503
        else:
            status = fault.status or 500
        if oauth:
            error = "internal_failure" if status >= 500 else "invalid_request"
            return JSONResponse({"error": error, "error_description": "Backend Error"}, status)
        if status == 429:
            exc = api_error(
                429,
                "Resource has been exhausted (e.g. check quota).",
                "rateLimitExceeded",
            )
        elif status >= 500:
            message, reason = _FAULT_MESSAGES.get(status, ("Backend Error", "backendError"))
            exc = api_error(status, message, reason)
        elif status == 401:
            exc = auth_error()
        else:
            message, reason = _ERROR_REASONS.get(status, ("Error", "error"))
            exc = api_error(status, message, reason)
        return error_response(exc)

    async def api(request: Request, endpoint: str, handler: Handler) -> Response:
        """Auth, faults, scopes and quota of one Data API request."""
        state.record_request(endpoint)
        token = bearer(request) or request.query_params.get("access_token")
        principal = state.principal_for_token(token) if token else None
        fault = state.faults.take(request.url.path, principal)
        if fault is not None:
            response = await fire(fault, request, oauth=False)
            if response is not None:
                return finish(response)
        if not token:
            return finish(
                error_response(
                    api_error(
                        403,
                        "Method doesn't allow unregistered callers (callers without established"
                        " identity). Please use API Key or other form of API consumer identity"
                        " to call this API.",
                        "forbidden",
                    )
                )
            )
        found = state.authenticate(token)
        if found is None:
            return finish(error_response(auth_error()))
        channel, scopes = found
        if not scopes & YOUTUBE_READ_SCOPES:
            return finish(
                error_response(
                    api_error(
                        403,
                        "Request had insufficient authentication scopes.",
                        "insufficientPermissions",
                        detail="Insufficient Permission",
                    )
                )
            )
        if not state.charge_quota(1):
            return finish(error_response(quota_error()))
        try:
            body = await handler(request, channel)
        except GoogleApiError as exc:
            return finish(error_response(exc))
        return finish(JSONResponse(body))

    async def channels(request: Request, me: Channel) -> Any:
        parts = _parts(request, CHANNEL_PARTS)
        q = request.query_params
        limit = _max_results(request, DEFAULT_MAX_RESULTS)
        if q.get("mine", "").lower() == "true":
            found: list[Channel] = [me]
        elif q.get("id"):
            wanted = [i.strip() for i in q["id"].split(",") if i.strip()]
            found = [c for c in (state.find(channel_id=i) for i in wanted) if c is not None]
        elif q.get("forHandle"):
            one = state.find(handle=q["forHandle"])
            found = [] if one is None else [one]
        else:
            raise api_error(
                400,
                "No filter selected. Expected one of: forUsername, id, idParam, managedByMe,"
                " mine, mySubscribers, categoryId, forHandle",
                "missingRequiredParameter",
                domain="youtube.parameter",
            )
        items = [state.channel_json(c, parts, c is me) for c in found[:limit]]
        return {
            "kind": "youtube#channelListResponse",
            "etag": data.etag("channels", [i["etag"] for i in items]),
            "pageInfo": {"totalResults": len(found), "resultsPerPage": limit},
            "items": items,
        }

    async def playlist_items(request: Request, me: Channel) -> Any:
        parts = _parts(request, ITEM_PARTS)
        q = request.query_params
        playlist_id = q.get("playlistId")
        if not playlist_id:
            raise api_error(
                400,
                "No filter selected. Expected one of: id, playlistId",
                "missingRequiredParameter",
                domain="youtube.parameter",
            )
        limit = _max_results(request, DEFAULT_MAX_RESULTS)
        channel = state.by_playlist(playlist_id)
        if channel is None:
            raise api_error(
                404,
                "The playlist identified with the request's <code>playlistId</code> parameter"
                " cannot be found.",
                "playlistNotFound",
                domain="youtube.playlistItem",
                location="playlistId",
            )
        token = q.get("pageToken")
        offset = 0
        if token:
            parsed = _page_offset(token, playlist_id)
            if parsed is None:
                raise api_error(
                    400,
                    "The request specifies an invalid page token.",
                    "invalidPageToken",
                    domain="youtube.parameter",
                    location="pageToken",
                )
            offset = parsed
        items, total = state.playlist_page(channel, offset, limit, parts)
        body: dict[str, Any] = {
            "kind": "youtube#playlistItemListResponse",
            "etag": data.etag("items", playlist_id, offset, [i["etag"] for i in items]),
        }
        if limit and offset + limit < total:
            body["nextPageToken"] = _page_token(playlist_id, offset + limit)
        if offset > 0:
            body["prevPageToken"] = _page_token(playlist_id, max(0, offset - max(limit, 1)))
        body["items"] = items
        body["pageInfo"] = {"totalResults": total, "resultsPerPage": limit}
        return body

    async def unknown(request: Request, me: Channel) -> Any:
        raise api_error(404, "Requested entity was not found.", "notFound")

    def api_route(path: str, handler: Handler, endpoint: str | None = None) -> Route:
        key = f"GET {endpoint or path}"

        async def endpoint_fn(request: Request) -> Response:
            return await api(request, key, handler)

        return Route(path, endpoint_fn, methods=["GET"])

    # -------------------------------------------------------------------------- OAuth
    async def fire_oauth(fault: Fault, request: Request) -> Response | None:
        return await fire(fault, request, oauth=True)

    async def oauth_guard(
        request: Request, endpoint: str, principal: str | None
    ) -> Response | None:
        return await fault_guard(state, request, endpoint, principal, fire_oauth)

    def error_page(status: int, error: str, detail: str) -> Response:
        html = (
            "<html><head><title>Access blocked</title></head><body>"
            f"<h1>Error {status}: {error}</h1><p>{detail}</p></body></html>"
        )
        return finish(HTMLResponse(html, status))

    async def authorize(request: Request) -> Response:
        q = request.query_params
        guarded = await oauth_guard(request, "GET /o/oauth2/v2/auth", None)
        if guarded is not None:
            return guarded
        if not state.check_client(q.get("client_id")):
            return error_page(401, "invalid_client", "The OAuth client was not found.")
        redirect_uri = q.get("redirect_uri")
        if not redirect_uri or not state.redirect_allowed(redirect_uri):
            return error_page(
                400,
                "redirect_uri_mismatch",
                "You can't sign in to this app because it doesn't comply with Google's OAuth 2.0"
                " policy.",
            )
        scopes = frozenset(q.get("scope", "").split())
        if not scopes:
            return error_page(400, "invalid_request", "Missing required parameter: scope")
        unknown_scopes = sorted(scopes - KNOWN_SCOPES)
        if unknown_scopes:
            return error_page(
                400,
                "invalid_scope",
                f"Some requested scopes were invalid: {{invalid={unknown_scopes}}}",
            )
        extra = {"state": q["state"]} if "state" in q else {}
        if q.get("response_type") != "code":
            params = {**extra, "error": "unsupported_response_type"}
            return finish(RedirectResponse(with_query(redirect_uri, params), 302))
        if q.get("sandbox_deny", "").lower() in ("1", "true"):
            return finish(
                RedirectResponse(with_query(redirect_uri, {**extra, "error": "access_denied"}), 302)
            )
        try:
            channel = state.pick_channel(q.get("sandbox_user"))
        except KeyError:
            return error_page(400, "invalid_request", "Unknown sandbox_user")
        code = state.new_code(
            channel,
            redirect_uri,
            scopes,
            offline=q.get("access_type") == "offline",
            consent="consent" in q.get("prompt", "").split(),
        )
        params = {**extra, "code": code, "scope": " ".join(sorted(scopes))}
        return finish(RedirectResponse(with_query(redirect_uri, params), 302))

    async def token(request: Request) -> Response:
        try:
            p = await _form(request)
        except ValueError:
            p = {}
        grant = p.get("grant_type", "")
        if grant == "refresh_token":
            principal = state.principal_for_refresh(p.get("refresh_token"))
        else:
            principal = state.principal_for_code(p.get("code"))
        guarded = await oauth_guard(request, "POST /token", principal)
        if guarded is not None:
            return guarded
        try:
            if grant == "authorization_code":
                body = state.exchange_code(p)
            elif grant == "refresh_token":
                body = state.refresh(p)
            else:
                return finish(
                    JSONResponse(
                        {
                            "error": "unsupported_grant_type",
                            "error_description": f"Invalid grant_type: {grant}",
                        },
                        400,
                    )
                )
        except GoogleApiError as exc:
            return finish(error_response(exc))
        return finish(JSONResponse(body, headers={"cache-control": "no-store"}))

    async def revoke_token(request: Request) -> Response:
        try:
            p = await _form(request)
        except ValueError:
            p = {}
        value = p.get("token", "")
        principal = state.principal_for_refresh(value) or state.principal_for_token(value)
        guarded = await oauth_guard(request, "POST /revoke", principal)
        if guarded is not None:
            return guarded
        if not state.revoke_token(value):
            return finish(
                JSONResponse(
                    {"error": "invalid_token", "error_description": "Token expired or revoked"},
                    400,
                )
            )
        return finish(JSONResponse({}))

    routes = [
        *state.control_routes(),
        Route("/o/oauth2/v2/auth", authorize, methods=["GET"]),
        Route("/o/oauth2/auth", authorize, methods=["GET"]),
        Route("/token", token, methods=["POST"]),
        Route("/o/oauth2/token", token, methods=["POST"]),
        Route("/revoke", revoke_token, methods=["POST"]),
        api_route("/youtube/v3/channels", channels),
        api_route("/youtube/v3/playlistItems", playlist_items),
        api_route("/youtube/v3/{rest:path}", unknown, "/youtube/v3/*"),
    ]
    return sandbox_app(state, routes)
