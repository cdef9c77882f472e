"""Starlette app serving the X API v2, its OAuth 2.0 endpoints and the ``/_sandbox`` API.

One app answers for both hosts: the API host (``api.x.com``: ``/2/...``) and the authorize
host (``x.com``: ``/i/oauth2/authorize``).
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
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
from sync_pipeline.sandbox.x.state import (
    ME,
    TIMELINE,
    XApiError,
    XSandboxState,
    invalid_request,
    parse_scopes,
    problem,
    too_many_requests_body,
    unauthorized,
)

Handler = Callable[[Request, IssuedToken], Any]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def _fault_response(
    fault: Fault, request: Request, headers: dict[str, str]
) -> Response | None:
    """X's answer for an injected fault; ``None`` means go on normally (``slow``)."""
    if await apply_delay(fault, request):
        return None
    if fault.kind == "timeout":
        return JSONResponse(problem(504, "Gateway Timeout"), 504, headers=headers)
    if fault.kind == "429":
        limited = {**headers, "x-rate-limit-remaining": "0"} if headers else {}
        return JSONResponse(too_many_requests_body(), 429, headers=limited)
    status = fault.status or (503 if fault.kind == "5xx" else 500)
    if status == 401:
        error = unauthorized()
        return JSONResponse(error.body, 401)
    if status == 400:
        error = invalid_request("sandbox", ["fault"], "Injected invalid request")
        return JSONResponse(error.body, 400, headers=headers)
    return JSONResponse(problem(status, _reason(status)), status, headers=headers)


def create_app(state: XSandboxState) -> Starlette:
    """Build the ASGI app around ``state``."""

    finish = state.finish

    async def api(request: Request, endpoint: str, handler: Handler) -> Response:
        state.record_request(endpoint)
        value = bearer(request)
        principal = state.principal_for(token=value)
        headers: dict[str, str] = {}
        fault = state.faults.take(request.url.path, principal)
        if fault is not None:
            state.record("faults_fired")
            live = state.issuer.authenticate(value)
            if live is not None:
                headers = state.rate_headers(endpoint, live.principal)
            faulted = await _fault_response(fault, request, headers)
            if faulted is not None:
                return finish(faulted)
        try:
            token = state.authenticate(value)
            decision = state.count_request(endpoint, token.principal)
            headers = decision.headers
            if decision.limited:
                return finish(JSONResponse(too_many_requests_body(), 429, headers=headers))
            return finish(JSONResponse(handler(request, token), headers=headers))
        except XApiError as exc:
            return finish(JSONResponse(exc.body, exc.status, headers={**headers, **exc.headers}))

    async def me(request: Request) -> Response:
        return await api(request, ME, lambda r, t: state.me(t, dict(r.query_params)))

    async def timeline(request: Request) -> Response:
        return await api(
            request,
            TIMELINE,
            lambda r, t: state.timeline(t, r.path_params["id"], dict(r.query_params)),
        )

    async def not_found(request: Request) -> Response:
        state.record_request(f"{request.method} /2/*")
        return finish(JSONResponse(problem(404, "Not Found"), 404))

    async def oauth_fault(request: Request, principal: str | None) -> Response | None:
        fault = state.faults.take(request.url.path, principal)
        if fault is None:
            return None
        state.record("faults_fired")
        faulted = await _fault_response(fault, request, {})
        return None if faulted is None else finish(faulted)

    async def authorize(request: Request) -> Response:
        state.record_request("GET /i/oauth2/authorize")
        q = request.query_params
        redirect_uri = q.get("redirect_uri", "")
        if q.get("client_id") != state.config.client_id:
            return finish(
                JSONResponse(
                    {"error": "invalid_request", "error_description": "Invalid client_id."}, 400
                )
            )
        if not redirect_uri or not state.redirect_allowed(redirect_uri):
            return finish(
                JSONResponse(
                    {"error": "invalid_request", "error_description": "Invalid redirect_uri."},
                    400,
                )
            )
        try:
            user_id = state.resolve_user(q.get("sandbox_user"))
        except KeyError:
            return finish(
                JSONResponse(
                    {"error": "invalid_request", "error_description": "Unknown sandbox_user."},
                    400,
                )
            )
        faulted = await oauth_fault(request, user_id)
        if faulted is not None:
            return faulted
        extra = {"state": q["state"]} if "state" in q else {}

        def fail(error: str, description: str) -> Response:
            params = {**extra, "error": error, "error_description": description}
            return finish(RedirectResponse(with_query(redirect_uri, params), 302))

        if q.get("sandbox_deny", "").lower() in ("1", "true"):
            return fail("access_denied", "The user denied the request.")
        if q.get("response_type") != "code":
            return fail("unsupported_response_type", "response_type must be code.")
        for name in ("state", "code_challenge"):
            if not q.get(name):
                return fail("invalid_request", f"Missing required parameter [{name}].")
        method = q.get("code_challenge_method", "plain")
        if method not in ("S256", "plain"):
            return fail("invalid_request", "Invalid code_challenge_method.")
        try:
            scopes = parse_scopes(q.get("scope"))
        except ValueError:
            return fail("invalid_scope", "One or more scopes are not valid.")
        if not scopes:
            return fail("invalid_scope", "Missing required parameter [scope].")
        code = state.new_code(user_id, scopes, redirect_uri, q["code_challenge"], method)
        return finish(RedirectResponse(with_query(redirect_uri, {**extra, "code": code}), 302))

    async def token(request: Request) -> Response:
        state.record_request("POST /2/oauth2/token")
        raw = (await request.body()).decode("utf-8", "replace")
        params = dict(parse_qsl(raw, keep_blank_values=True))
        grant_type = params.get("grant_type")
        grant = params.get("refresh_token") if grant_type == "refresh_token" else params.get("code")
        faulted = await oauth_fault(request, state.principal_for(grant=grant))
        if faulted is not None:
            return faulted
        try:
            state.check_client(request.headers.get("authorization"), params.get("client_id"))
            if grant_type == "authorization_code":
                body = state.exchange_code(params)
            elif grant_type == "refresh_token":
                body = state.refresh(params)
            elif not grant_type:
                raise XApiError(
                    400,
                    {
                        "error": "invalid_request",
                        "error_description": "Missing required parameter [grant_type].",
                    },
                )
            else:
                raise XApiError(
                    400,
                    {
                        "error": "unsupported_grant_type",
                        "error_description": "Value passed for the grant type was invalid.",
                    },
                )
        except XApiError as exc:
            return finish(JSONResponse(exc.body, exc.status))
        return finish(JSONResponse(body))

    routes = [
        Route("/2/users/me", me, methods=["GET"]),
        Route("/2/users/{id}/tweets", timeline, methods=["GET"]),
        Route("/2/oauth2/token", token, methods=["POST"]),
        Route("/i/oauth2/authorize", authorize, methods=["GET"]),
        *state.control_routes(),
        Route("/2/{rest:path}", not_found, methods=["GET", "POST", "PUT", "DELETE"]),
    ]
    return sandbox_app(state, routes)
