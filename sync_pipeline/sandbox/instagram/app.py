"""Starlette app serving the Instagram API with Instagram Login and the ``/_sandbox`` API.

One app answers for all three hosts: ``www.instagram.com/oauth/authorize``,
``api.instagram.com/oauth/access_token`` and the Graph host ``graph.instagram.com``
(``/access_token``, ``/refresh_access_token``, ``/me``, ``/{id}``, ``/{id}/media``, each also
under a version prefix such as ``/v23.0``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from sync_pipeline.sandbox.common import (
    Fault,
    IssuedToken,
    apply_delay,
    bearer,
    sandbox_app,
    with_query,
)
from sync_pipeline.sandbox.instagram.state import (
    BASIC_SCOPE,
    GraphError,
    InstagramSandboxState,
    graph_error,
    oauth_host_error,
    parse_scopes,
    unsupported_get,
)

VERSION = re.compile(r"^v\d+\.\d+$")
Handler = Callable[[IssuedToken], dict[str, Any]]


def _fault_error(fault: Fault, state: InstagramSandboxState) -> GraphError:
    """The Graph error an injected fault stands for."""
    if fault.kind == "timeout":
        return graph_error("Service temporarily unavailable", 2, status=504, is_transient=True)
    if fault.kind == "429":
        return state.throttle_error()
    status = fault.status or (500 if fault.kind == "5xx" else 400)
    if status >= 500:
        return graph_error(
            "An unexpected error has occurred. Please retry your request later.",
            2,
            status=status,
            is_transient=True,
        )
    if status in (401, 403):
        return graph_error(
            "(#10) Application does not have permission for this action", 10, status=status
        )
    if status == 404:
        error = unsupported_get("sandbox")
        error.status = 404
        return error
    if status == 400:
        return graph_error("(#100) Invalid parameter", 100)
    return graph_error("An unknown error has occurred.", 1, status=status)


def create_app(state: InstagramSandboxState) -> Starlette:
    """Build the ASGI app around ``state``."""

    finish = state.finish

    def error_response(exc: GraphError, headers: dict[str, str] | None = None) -> Response:
        return finish(
            JSONResponse(exc.body, exc.status, headers={**(headers or {}), **exc.headers})
        )

    async def fault_for(request: Request, principal: str | None) -> Response | None:
        """Fire a matching injected fault; ``None`` when none fired or it was only ``slow``."""
        fault = state.faults.take(request.url.path, principal)
        if fault is None:
            return None
        state.record("faults_fired")
        if await apply_delay(fault, request):
            return None
        headers: dict[str, str] = {}
        if principal is not None:
            headers = state.usage_header(principal, 100 if fault.kind == "429" else 0)
        return error_response(_fault_error(fault, state), headers)

    def token_value(request: Request, params: dict[str, str]) -> str | None:
        return params.get("access_token") or bearer(request)

    async def graph_call(
        request: Request, endpoint: str, params: dict[str, str], handler: Handler
    ) -> Response:
        """A BUC-limited Graph read: faults, token checks, throttling, usage header."""
        state.record_request(endpoint)
        value = token_value(request, params)
        faulted = await fault_for(request, state.principal_for(value))
        if faulted is not None:
            return faulted
        headers: dict[str, str] = {}
        try:
            token = state.authenticate(value)
            decision = state.count_call(token.principal)
            headers = decision.headers
            if decision.limited:
                raise state.throttle_error()
            return finish(JSONResponse(handler(token), headers=headers))
        except GraphError as exc:
            return error_response(exc, headers)

    async def token_call(
        request: Request, endpoint: str, params: dict[str, str], handler: Callable[[], Any]
    ) -> Response:
        """``/access_token`` and ``/refresh_access_token`` (not BUC-limited)."""
        state.record_request(endpoint)
        faulted = await fault_for(request, state.principal_for(token_value(request, params)))
        if faulted is not None:
            return faulted
        try:
            return finish(JSONResponse(handler()))
        except GraphError as exc:
            return error_response(exc)

    async def graph(request: Request) -> Response:
        segments = [s for s in request.url.path.split("/") if s]
        if segments and VERSION.match(segments[0]):
            segments = segments[1:]
        params = dict(request.query_params)
        if segments == ["access_token"]:
            return await token_call(
                request,
                "GET /access_token",
                params,
                lambda: state.exchange_long_lived(
                    {**params, "access_token": token_value(request, params) or ""}
                ),
            )
        if segments == ["refresh_access_token"]:
            return await token_call(
                request,
                "GET /refresh_access_token",
                params,
                lambda: state.refresh_long_lived(
                    {**params, "access_token": token_value(request, params) or ""}
                ),
            )
        if len(segments) == 1:
            node = segments[0]
            endpoint = "GET /me" if node == "me" else "GET /{id}"
            return await graph_call(
                request, endpoint, params, lambda t: state.node(t, node, params)
            )
        if len(segments) == 2 and segments[1] == "media":
            node = segments[0]
            base_url = str(request.url.replace(query=""))
            return await graph_call(
                request,
                "GET /{ig-user-id}/media",
                params,
                lambda t: state.media_edge(t, node, params, base_url),
            )
        state.record_request("GET /*")
        return error_response(unsupported_get("/".join(segments)))

    async def authorize(request: Request) -> Response:
        state.record_request("GET /oauth/authorize")
        q = request.query_params
        redirect_uri = q.get("redirect_uri", "")
        try:
            state.check_app(q.get("client_id"))
            if not redirect_uri or not state.redirect_allowed(redirect_uri):
                raise oauth_host_error("Invalid redirect_uri")
            if q.get("response_type") != "code":
                raise oauth_host_error('Only response type "code" and "token" is allowed')
            try:
                scopes = parse_scopes(q.get("scope"))
            except ValueError as exc:
                raise oauth_host_error(str(exc)) from None
            if BASIC_SCOPE not in scopes:
                raise oauth_host_error(f"Invalid scope field(s): {BASIC_SCOPE} is required")
            try:
                user_id = state.resolve_user(q.get("sandbox_user"))
            except KeyError:
                raise oauth_host_error("Unknown sandbox_user") from None
        except GraphError as exc:
            return error_response(exc)
        faulted = await fault_for(request, user_id)
        if faulted is not None:
            return faulted
        extra = {"state": q["state"]} if "state" in q else {}
        if q.get("sandbox_deny", "").lower() in ("1", "true"):
            params = {
                "error": "access_denied",
                "error_reason": "user_denied",
                "error_description": "The user denied your request.",
                **extra,
            }
            return finish(RedirectResponse(with_query(redirect_uri, params, fragment="_"), 302))
        code = state.new_code(user_id, scopes, redirect_uri)
        return finish(
            RedirectResponse(with_query(redirect_uri, {"code": code, **extra}, fragment="_"), 302)
        )

    async def access_token(request: Request) -> Response:
        state.record_request("POST /oauth/access_token")
        raw = (await request.body()).decode("utf-8", "replace")
        params = dict(parse_qsl(raw, keep_blank_values=True))
        code = params.get("code", "").removesuffix("#_")
        faulted = await fault_for(request, state.code_owner(code))
        if faulted is not None:
            return faulted
        try:
            return finish(JSONResponse(state.exchange_code(params)))
        except GraphError as exc:
            return error_response(exc)

    routes = [
        Route("/oauth/authorize", authorize, methods=["GET"]),
        Route("/oauth/access_token", access_token, methods=["POST"]),
        *state.control_routes(),
        Route("/{path:path}", graph, methods=["GET"]),
    ]
    return sandbox_app(state, routes)
