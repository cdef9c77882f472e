"""Starlette app serving the Strava API v3, OAuth and the ``/_sandbox`` control API."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from sync_pipeline.sandbox.common import (
    Fault,
    apply_delay,
    control_endpoint,
    fault_guard,
    json_body,
    request_params,
    sandbox_app,
    with_query,
)
from sync_pipeline.sandbox.strava.state import (
    AccessToken,
    StravaApiError,
    StravaSandboxState,
    error_body,
    not_found,
    rate_limit_body,
    scope_string,
)

Handler = Callable[[Request, AccessToken], Awaitable[Any]]
_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _bad_request(field_name: str) -> StravaApiError:
    return StravaApiError(400, error_body("Bad Request", "Application", field_name, "invalid"))


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(float(raw))
    except ValueError:
        raise _bad_request(name) from None


def _path_id(request: Request) -> int:
    try:
        return int(request.path_params["id"])
    except ValueError:
        raise not_found() from None


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query_params.get("access_token")


async def _params(request: Request) -> dict[str, str]:
    """Query string merged with a form or JSON body (JSON values other than strings as JSON)."""
    try:
        return await request_params(request, encode=json.dumps, keep_none=True)
    except ValueError:
        raise _bad_request("body") from None


async def _fire(fault: Fault, request: Request, headers: dict[str, str]) -> JSONResponse | None:
    """Turn a fault into a response; ``None`` means continue normally (slow)."""
    if fault.kind == "429":  # at once, whatever the delay
        return JSONResponse(rate_limit_body(), 429, headers=headers)
    if await apply_delay(fault, request):
        return None
    if fault.kind == "timeout":
        return JSONResponse(
            error_body("Gateway Timeout", "Server", "", "timeout"), 504, headers=headers
        )
    status = fault.status or 503
    body = error_body(_REASONS.get(status, "Server Error"), "Server", "", "unavailable")
    return JSONResponse(body, status, headers=headers)


def create_app(state: StravaSandboxState) -> Starlette:
    """Build the ASGI app around ``state``."""

    async def api(request: Request, endpoint: str, handler: Handler) -> Response:
        state.record_request(endpoint)
        token_value = _bearer(request)
        decision = state.count_api_request(request.method in ("GET", "HEAD"))
        headers = decision.headers
        response: Response | None = None
        if decision.limited:
            response = JSONResponse(rate_limit_body(), 429, headers=headers)
        else:
            fault = state.take_fault(request.url.path, state.athlete_for_token(token_value))
            if fault is not None:
                response = await _fire(fault, request, headers)
        if response is None:
            try:
                token = state.authenticate(token_value)
                response = JSONResponse(await handler(request, token), headers=headers)
            except StravaApiError as exc:
                response = JSONResponse(exc.body, exc.status, headers=headers)
        state.record_response(response.status_code)
        return response

    async def athlete(request: Request, token: AccessToken) -> Any:
        return state.athlete_json(token.athlete_id, detailed="profile:read_all" in token.scopes)

    async def activities(request: Request, token: AccessToken) -> Any:
        return state.list_activities(
            token,
            before=_int_param(request, "before"),
            after=_int_param(request, "after"),
            page=_int_param(request, "page") or 1,
            per_page=_int_param(request, "per_page") or 30,
        )

    async def activity(request: Request, token: AccessToken) -> Any:
        return state.get_activity(token, _path_id(request))

    async def put_activity(request: Request, token: AccessToken) -> Any:
        raw = await _params(request)
        changes: dict[str, Any] = {}
        for key, value in raw.items():
            if key in ("commute", "trainer", "hide_from_home", "private"):
                changes[key] = value.lower() in ("true", "1")
            elif key in ("name", "description"):
                changes[key] = value
            elif key in ("type", "sport_type") and value:
                changes["type"] = value
        return state.put_activity(token, _path_id(request), changes)

    async def streams(request: Request, token: AccessToken) -> Any:
        keys_raw = request.query_params.get("keys", "")
        keys = [k.strip() for k in keys_raw.split(",") if k.strip()] or None
        found = state.get_streams(token, _path_id(request), keys)
        series = request.query_params.get("series_type", "distance")
        series = series if series in ("distance", "time") else "distance"
        items = {
            k: {"data": v, "series_type": series, "original_size": len(v), "resolution": "high"}
            for k, v in found.items()
        }
        if request.query_params.get("key_by_type", "").lower() == "true":
            return items
        return [{"type": k, **v} for k, v in items.items()]

    async def unknown_api(request: Request, token: AccessToken) -> Any:
        raise not_found("resource", "path")

    def api_route(path: str, method: str, handler: Handler, endpoint: str | None = None) -> Route:
        key = f"{method} {endpoint or path}"

        async def endpoint_fn(request: Request) -> Response:
            return await api(request, key, handler)

        return Route(path, endpoint_fn, methods=[method])

    finish = state.finish

    async def fire_bare(fault: Fault, request: Request) -> Response | None:
        return await _fire(fault, request, {})

    async def oauth_guard(
        request: Request, endpoint: str, athlete_id: int | None
    ) -> Response | None:
        return await fault_guard(state, request, endpoint, athlete_id, fire_bare)

    async def prepare(
        request: Request, endpoint: str, owner: Callable[[dict[str, str]], int | None]
    ) -> dict[str, str] | Response:
        """The request's parameters, or the response ending it (a bad body or a fault)."""
        try:
            params = await _params(request)
        except StravaApiError as exc:
            state.record_request(endpoint)
            return finish(JSONResponse(exc.body, exc.status))
        guarded = await oauth_guard(request, endpoint, owner(params))
        return params if guarded is None else guarded

    def nobody(params: dict[str, str]) -> None:
        return None

    async def authorize(request: Request) -> Response:
        q = request.query_params
        try:
            athlete_id = int(q["sandbox_athlete_id"]) if q.get("sandbox_athlete_id") else None
        except ValueError:
            athlete_id = -1
        guarded = await oauth_guard(request, "GET /oauth/authorize", athlete_id)
        if guarded is not None:
            return guarded
        try:
            redirect_uri = q.get("redirect_uri")
            if q.get("sandbox_deny", "").lower() in ("1", "true") and redirect_uri:
                state.check_client(q.get("client_id"))
                denied = {"state": q["state"]} if "state" in q else {}
                denied["error"] = "access_denied"
                return finish(RedirectResponse(with_query(redirect_uri, denied, safe=",:"), 302))
            code, scopes = state.authorize(
                q.get("client_id"),
                redirect_uri,
                q.get("response_type"),
                q.get("sandbox_scope") or q.get("scope"),
                athlete_id,
            )
        except StravaApiError as exc:
            return finish(JSONResponse(exc.body, exc.status))
        params = {"state": q["state"]} if "state" in q else {}
        params.update({"code": code, "scope": scope_string(scopes)})
        assert redirect_uri is not None
        return finish(RedirectResponse(with_query(redirect_uri, params, safe=",:"), 302))

    def grant_owner(p: dict[str, str]) -> int | None:
        if p.get("grant_type") == "refresh_token":
            return state.athlete_for_refresh_token(p.get("refresh_token"))
        return state.athlete_for_code(p.get("code"))

    async def token(request: Request) -> Response:
        p = await prepare(request, "POST /oauth/token", grant_owner)
        if isinstance(p, Response):
            return p
        grant = p.get("grant_type")
        try:
            if grant == "authorization_code":
                body = state.exchange_code(
                    p.get("client_id"), p.get("client_secret"), p.get("code")
                )
            elif grant == "refresh_token":
                body = state.refresh(
                    p.get("client_id"), p.get("client_secret"), p.get("refresh_token")
                )
            else:
                state.check_credentials(p.get("client_id"), p.get("client_secret"))
                raise _bad_request("grant_type")
        except StravaApiError as exc:
            return finish(JSONResponse(exc.body, exc.status))
        return finish(JSONResponse(body))

    async def deauthorize(request: Request) -> Response:
        def value(p: dict[str, str]) -> str | None:
            return p.get("access_token") or _bearer(request)

        p = await prepare(
            request, "POST /oauth/deauthorize", lambda p: state.athlete_for_token(value(p))
        )
        if isinstance(p, Response):
            return p
        try:
            return finish(JSONResponse(state.deauthorize(value(p))))
        except StravaApiError as exc:
            return finish(JSONResponse(exc.body, exc.status))

    async def create_subscription(request: Request) -> Response:
        p = await prepare(request, "POST /api/v3/push_subscriptions", nobody)
        if isinstance(p, Response):
            return p
        try:
            # The validation GET to the callback blocks: keep it off the event loop.
            body = await run_in_threadpool(
                state.create_push_subscription,
                p.get("client_id"),
                p.get("client_secret"),
                p.get("callback_url"),
                p.get("verify_token"),
            )
        except StravaApiError as exc:
            return finish(JSONResponse(exc.body, exc.status))
        return finish(JSONResponse(body, 201))

    async def list_subscriptions(request: Request) -> Response:
        guarded = await oauth_guard(request, "GET /api/v3/push_subscriptions", None)
        if guarded is not None:
            return guarded
        q = request.query_params
        try:
            body = state.list_push_subscriptions(q.get("client_id"), q.get("client_secret"))
        except StravaApiError as exc:
            return finish(JSONResponse(exc.body, exc.status))
        return finish(JSONResponse(body))

    async def delete_subscription(request: Request) -> Response:
        p = await prepare(request, "DELETE /api/v3/push_subscriptions/{id}", nobody)
        if isinstance(p, Response):
            return p
        try:
            try:
                subscription_id = int(request.path_params["id"])
            except ValueError:
                raise not_found("PushSubscription", "id") from None
            state.delete_push_subscription(
                p.get("client_id"), p.get("client_secret"), subscription_id
            )
        except StravaApiError as exc:
            return finish(JSONResponse(exc.body, exc.status))
        return finish(Response(status_code=204))

    routes = [
        Route("/api/v3/push_subscriptions", create_subscription, methods=["POST"]),
        Route("/api/v3/push_subscriptions", list_subscriptions, methods=["GET"]),
        Route("/api/v3/push_subscriptions/{id}", delete_subscription, methods=["DELETE"]),
        api_route("/api/v3/athlete", "GET", athlete),
        api_route("/api/v3/athlete/activities", "GET", activities),
        api_route("/api/v3/activities/{id}", "GET", activity),
        api_route("/api/v3/activities/{id}", "PUT", put_activity),
        api_route("/api/v3/activities/{id}/streams", "GET", streams),
        *[
            api_route("/api/v3/{rest:path}", m, unknown_api, "/api/v3/*")
            for m in ("GET", "POST", "PUT", "DELETE", "PATCH")
        ],
        Route("/oauth/authorize", authorize, methods=["GET"]),
        Route("/oauth/token", token, methods=["POST"]),
        Route("/oauth/deauthorize", deauthorize, methods=["POST"]),
        *control_routes(state),
    ]
    return sandbox_app(state, routes)


def control_routes(state: StravaSandboxState) -> list[Route]:
    """Routes of the sandbox-only ``/_sandbox`` control API: athletes, activities, the rest."""

    def pid(request: Request) -> int:
        try:
            return int(request.path_params["id"])
        except ValueError:
            raise not_found() from None

    async def athletes(request: Request) -> Any:
        return state.list_athletes()

    async def add_athlete(request: Request) -> Any:
        body = await json_body(request)
        return {"id": state.add_athlete(int(body.get("activity_count", 0)))}

    async def add_activities(request: Request) -> Any:
        body = await json_body(request)
        return {"ids": state.add_activities(pid(request), int(body.get("count", 1)))}

    async def patch_activity(request: Request) -> Any:
        body = await json_body(request)
        return state.update_activity(pid(request), **body)

    async def delete_activity(request: Request) -> Any:
        state.delete_activity(pid(request))
        return {"deleted": pid(request)}

    async def revoke(request: Request) -> Any:
        return {"revoked": state.revoke(pid(request))}

    async def tokens(request: Request) -> Any:
        body = await json_body(request)
        return state.issue_tokens(pid(request), str(body.get("scope", "read,activity:read_all")))

    wrap = control_endpoint
    return [
        Route("/_sandbox/athletes", wrap(athletes), methods=["GET"]),
        Route("/_sandbox/athletes", wrap(add_athlete), methods=["POST"]),
        Route("/_sandbox/athletes/{id}/activities", wrap(add_activities), methods=["POST"]),
        Route("/_sandbox/athletes/{id}/revoke", wrap(revoke), methods=["POST"]),
        Route("/_sandbox/athletes/{id}/tokens", wrap(tokens), methods=["POST"]),
        Route("/_sandbox/activities/{id}", wrap(patch_activity), methods=["PATCH"]),
        Route("/_sandbox/activities/{id}", wrap(delete_activity), methods=["DELETE"]),
        *state.control_routes(),
    ]
