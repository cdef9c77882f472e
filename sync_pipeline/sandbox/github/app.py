"""Starlette app serving GitHub's REST and GraphQL APIs, its OAuth endpoints and ``/_sandbox``.

One app answers for both hosts: ``github.com`` (``/login/oauth/...``) and
``api.github.com`` (everything else), so a client may use the same base URL for both.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

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
    json_body,
    request_params,
    sandbox_app,
    with_query,
)
from sync_pipeline.sandbox.github import schema
from sync_pipeline.sandbox.github.data import User
from sync_pipeline.sandbox.github.graphql import GraphQLError, run
from sync_pipeline.sandbox.github.state import (
    DOCS,
    EVENTS_DEFAULT_PER_PAGE,
    EVENTS_MAX,
    EVENTS_MAX_PER_PAGE,
    RATE_DOCS,
    Budget,
    GitHubApiError,
    GitHubSandboxState,
)

Handler = Callable[[Request, User | None], Awaitable["Reply"]]

_REASONS = {
    400: "Bad Request",
    401: "Bad credentials",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    410: "Gone",
    422: "Validation Failed",
    500: "Server Error",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_UNICORN = (
    "<!DOCTYPE html><html><head><title>Unicorn! &middot; GitHub</title></head>"
    "<body><h1>No server is currently available to service your request.</h1>"
    "<p>Sorry about that. Please try refreshing and contact us if the problem persists.</p>"
    "</body></html>"
)
_SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
    " If you reach out to GitHub Support for help, please include the request ID {rid}."
)
_TIMEOUT_MESSAGE = (
    "We couldn't respond to your request in time. Sorry about that. Please try resubmitting"
    " your request and contact us if the problem persists."
)
_GRAPHQL_AUTH_DOCS = f"{DOCS}/graphql/guides/forming-calls-with-graphql#authenticating-with-graphql"


class Reply:
    """A handler's successful result: JSON body plus extra headers."""

    def __init__(self, body: Any, headers: dict[str, str] | None = None) -> None:
        self.body = body
        self.headers = headers or {}


def _request_id() -> str:
    return "-".join(secrets.token_hex(n).upper() for n in (2, 3, 3, 4, 3))


def _error(status: int, message: str, docs: str, headers: dict[str, str]) -> JSONResponse:
    return JSONResponse(
        {"message": message, "documentation_url": docs, "status": str(status)},
        status,
        headers=headers,
    )


def _etag(body: Any) -> str:
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return f'W/"{hashlib.sha256(raw).hexdigest()[:32]}"'


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    wanted = etag.removeprefix("W/")
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False


def _int_param(request: Request, name: str, default: int) -> int:
    try:
        return int(request.query_params.get(name, default))
    except ValueError:
        return default


def create_app(state: GitHubSandboxState) -> Starlette:
    """Build the ASGI app around ``state``."""
    engine = schema.build_engine()

    finish = state.finish

    def common_headers(budget: Budget | None) -> dict[str, str]:
        headers = {
            "x-github-media-type": "github.v3; format=json",
            "x-github-request-id": _request_id(),
        }
        if budget is not None:
            headers.update(budget.headers())
        return headers

    async def fire(
        fault: Fault, request: Request, headers: dict[str, str], graphql: bool
    ) -> Response | None:
        """The response an injected fault produces; None lets the request go on (slow)."""
        proceed = await apply_delay(fault, request)
        if fault.kind == "slow" and proceed:
            return None
        if fault.kind == "timeout":
            if graphql:
                body = {
                    "data": None,
                    "errors": [
                        {
                            "message": "Something went wrong while executing your query. This"
                            " may be the result of a timeout, or it could be a GitHub bug."
                            f" Please include `{headers['x-github-request-id']}` when"
                            " reporting this issue."
                        }
                    ],
                }
                return JSONResponse(body, 502, headers=headers)
            return JSONResponse({"message": _TIMEOUT_MESSAGE}, 502, headers=headers)
        if fault.kind in ("429", "secondary"):
            status = 429 if fault.kind == "429" else 403
            retry = {"retry-after": str(state.config.secondary_retry_after)}
            message = _SECONDARY_MESSAGE.format(rid=headers["x-github-request-id"])
            return _error(
                status,
                message,
                f"{RATE_DOCS}#about-secondary-rate-limits",
                {
                    **headers,
                    **retry,
                },
            )
        if fault.kind == "5xx":
            status = fault.status or 502
            if status == 502:
                return HTMLResponse(_UNICORN, 502, headers=headers)
            return JSONResponse({"message": _REASONS.get(status, "Server Error")}, status, headers)
        status = fault.status or 500
        return _error(status, _REASONS.get(status, "Error"), f"{DOCS}/rest", headers)

    def rate_limited(key: str, user: User | None, budget: Budget) -> Response:
        if user is not None:
            message = f"API rate limit exceeded for user ID {user.id}."
        else:
            message = (
                f"API rate limit exceeded for {key.removeprefix('ip:')}. (But here's the good"
                " news: Authenticated requests get a higher rate limit. Check out the"
                " documentation for more details.)"
            )
        status = state.config.primary_limit_status
        docs = f"{RATE_DOCS}#about-the-primary-rate-limit"
        return _error(status, message, docs, common_headers(budget))

    def secondary_limited(budget: Budget, retry_after: int) -> Response:
        headers = {**common_headers(budget), "retry-after": str(retry_after)}
        message = _SECONDARY_MESSAGE.format(rid=headers["x-github-request-id"])
        return _error(403, message, f"{RATE_DOCS}#about-secondary-rate-limits", headers)

    def client_key(request: Request) -> str:
        return f"ip:{request.client.host if request.client else 'unknown'}"

    async def rest(
        request: Request,
        endpoint: str,
        handler: Handler,
        *,
        requires_auth: bool = False,
        free: bool = False,
    ) -> Response:
        """Auth, faults, limits, conditional requests and headers of one REST request."""
        state.record_request(endpoint)
        if not request.headers.get("user-agent"):
            return finish(
                Response(
                    "Request forbidden by administrative rules. Please make sure your request"
                    " has a User-Agent header (https://docs.github.com/en/rest/overview/"
                    "resources-in-the-rest-api#user-agent-required). Check"
                    " https://developer.github.com for other possible causes.\n",
                    403,
                    media_type="text/plain",
                )
            )
        token = bearer(request)
        user = state.authenticate(token) if token else None
        key = f"user:{user.id}" if user else client_key(request)
        principal = state.principal_for_token(token) if token else None
        fault = state.faults.take(request.url.path, principal)
        if fault is not None:
            response = await fire(fault, request, common_headers(state.budget(key, "core")), False)
            if response is not None:
                return finish(response)
        if token and user is None:
            budget, _ = state.charge(key, "core")
            return finish(_error(401, "Bad credentials", f"{DOCS}/rest", common_headers(budget)))
        if requires_auth and user is None:
            budget = state.budget(key, "core")
            docs = f"{DOCS}/rest/users/users#get-the-authenticated-user"
            return finish(_error(401, "Requires authentication", docs, common_headers(budget)))
        if not free:
            retry = state.charge_secondary(key, "core")
            if retry is not None:
                return finish(secondary_limited(state.budget(key, "core"), retry))
        try:
            reply: Reply | None = await handler(request, user)
            error: GitHubApiError | None = None
        except GitHubApiError as exc:
            reply, error = None, exc
        if free:
            budget = state.budget(key, "core")
        else:
            etag = _etag(reply.body) if reply is not None else None
            if reply and etag and _etag_matches(request.headers.get("if-none-match"), etag):
                # A 304 does not count against the primary rate limit.
                headers = {**common_headers(state.budget(key, "core")), **reply.headers}
                headers["etag"] = etag
                headers.pop("link", None)
                return finish(Response(status_code=304, headers=headers))
            budget, refused = state.charge(key, "core")
            if refused:
                return finish(rate_limited(key, user, budget))
        if error is not None:
            headers = {**common_headers(budget), **error.headers}
            return finish(JSONResponse(error.body, error.status, headers=headers))
        assert reply is not None
        headers = {**common_headers(budget), **reply.headers}
        if not free:
            headers["etag"] = _etag(reply.body)
            headers["cache-control"] = "private, max-age=60, s-maxage=60"
            headers["vary"] = "Accept, Authorization, Cookie, X-GitHub-OTP"
        return finish(JSONResponse(reply.body, headers=headers))

    def api_base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    async def get_user(request: Request, user: User | None) -> Reply:
        assert user is not None
        return Reply(state.user_json(user, api_base(request)))

    async def get_named_user(request: Request, user: User | None) -> Reply:
        found = state.find_login(request.path_params["username"])
        if found is None:
            raise GitHubApiError(404, "Not Found", f"{DOCS}/rest/users/users#get-a-user")
        body = state.user_json(found, api_base(request))
        if user is None or user.id != found.id:
            body.pop("notification_email", None)
        return Reply(body)

    async def events(request: Request, user: User | None) -> Reply:
        login = request.path_params["username"]
        if state.find_login(login) is None:
            raise GitHubApiError(
                404,
                "Not Found",
                f"{DOCS}/rest/activity/events#list-events-for-the-authenticated-user",
            )
        per_page = _int_param(request, "per_page", EVENTS_DEFAULT_PER_PAGE)
        if per_page < 1:
            per_page = EVENTS_DEFAULT_PER_PAGE
        per_page = min(per_page, EVENTS_MAX_PER_PAGE)
        page = max(1, _int_param(request, "page", 1))
        if page > 1 and (page - 1) * per_page >= EVENTS_MAX:
            raise GitHubApiError(
                422,
                "In order to keep the API fast for everyone, pagination is limited for this"
                " resource.",
                f"{DOCS}/v3/#pagination",
            )
        items, last = state.events_page(login, page, per_page, api_base(request))
        headers = {"x-poll-interval": str(state.config.poll_interval)}
        links = []

        def link(p: int, rel: str) -> str:
            return f'<{request.url.include_query_params(page=p)}>; rel="{rel}"'

        if page > 1:
            links.append(link(min(page - 1, last), "prev"))
        if page < last:
            links.append(link(page + 1, "next"))
            links.append(link(last, "last"))
        if page > 1:
            links.append(link(1, "first"))
        if links:
            headers["link"] = ", ".join(links)
        return Reply(items, headers)

    async def rate_limit(request: Request, user: User | None) -> Reply:
        key = f"user:{user.id}" if user else client_key(request)
        core = state.budget(key, "core").as_dict()
        resources = {"core": core}
        if user is not None:
            resources["graphql"] = state.budget(key, "graphql").as_dict()
        return Reply({"resources": resources, "rate": core})

    async def unknown(request: Request, user: User | None) -> Reply:
        raise GitHubApiError(404, "Not Found", f"{DOCS}/rest")

    def rest_route(
        path: str, handler: Handler, endpoint: str | None = None, method: str = "GET", **kw: Any
    ) -> Route:
        key = f"{method} {endpoint or path}"

        async def endpoint_fn(request: Request) -> Response:
            return await rest(request, key, handler, **kw)

        return Route(path, endpoint_fn, methods=[method])

    # ------------------------------------------------------------------------ GraphQL
    async def graphql(request: Request) -> Response:
        state.record_request("POST /graphql")
        token = bearer(request)
        user = state.authenticate(token) if token else None
        principal = state.principal_for_token(token) if token else None
        key = f"user:{user.id}" if user else client_key(request)
        fault = state.faults.take(request.url.path, principal)
        if fault is not None:
            budget = state.budget(key, "graphql") if user else None
            response = await fire(fault, request, common_headers(budget), True)
            if response is not None:
                return finish(response)
        if user is None:
            if token:
                return finish(
                    _error(401, "Bad credentials", f"{DOCS}/graphql", common_headers(None))
                )
            return finish(
                _error(
                    401,
                    "This endpoint requires you to be authenticated.",
                    _GRAPHQL_AUTH_DOCS,
                    common_headers(None),
                )
            )
        retry = state.charge_secondary(key, "graphql")
        if retry is not None:
            return finish(secondary_limited(state.budget(key, "graphql"), retry))
        try:
            body = await json_body(request)
        except ValueError:
            return finish(
                _error(400, "Problems parsing JSON", f"{DOCS}/graphql", common_headers(None))
            )
        query = body.get("query")
        if not isinstance(query, str):
            return finish(
                _error(
                    400,
                    "A query attribute must be specified and must be a string.",
                    f"{DOCS}/graphql",
                    common_headers(None),
                )
            )
        variables = body.get("variables") or {}
        if isinstance(variables, str):
            try:
                variables = json.loads(variables) if variables.strip() else {}
            except ValueError:
                variables = None
        if not isinstance(variables, dict):
            return finish(
                _error(400, "Problems parsing JSON", f"{DOCS}/graphql", common_headers(None))
            )
        context = schema.Context(state, user, {})

        def charge() -> GraphQLError | None:
            budget, refused = state.charge(key, "graphql", 1)
            if refused:
                return GraphQLError(
                    f"API rate limit already exceeded for user ID {user.id}.",
                    type_="RATE_LIMIT",
                    code="graphql_rate_limit",
                )
            state.count("graphql_points")
            context.rate_limit = {
                "cost": 1,
                "limit": budget.limit,
                "remaining": budget.remaining,
                "used": budget.used,
                "reset": budget.reset,
                "nodeCount": 0,
            }
            return None

        result = run(
            engine,
            query,
            variables,
            body.get("operationName") if isinstance(body.get("operationName"), str) else None,
            context,
            before_execute=charge,
        )
        headers = common_headers(state.budget(key, "graphql"))
        return finish(JSONResponse(result.as_dict(), headers=headers))

    # -------------------------------------------------------------------------- OAuth
    async def fire_oauth(fault: Fault, request: Request) -> Response | None:
        return await fire(fault, request, common_headers(None), False)

    async def oauth_guard(
        request: Request, endpoint: str, principal: str | None
    ) -> Response | None:
        return await fault_guard(state, request, endpoint, principal, fire_oauth)

    def error_page(status: int, text: str) -> Response:
        return finish(HTMLResponse(f"<html><body><h1>{text}</h1></body></html>", status))

    async def authorize(request: Request) -> Response:
        q = request.query_params
        guarded = await oauth_guard(request, "GET /login/oauth/authorize", None)
        if guarded is not None:
            return guarded
        if not state.check_client(q.get("client_id")):
            return error_page(404, "Not Found")
        redirect_uri = q.get("redirect_uri") or state.config.callback_url
        if not redirect_uri:
            return error_page(400, "redirect_uri is required (no callback_url is configured)")
        extra = {"state": q["state"]} if "state" in q else {}
        if not state.redirect_allowed(redirect_uri):
            assert state.config.callback_url is not None
            params = {
                "error": "redirect_uri_mismatch",
                "error_description": "The redirect_uri MUST match the registered callback URL"
                " for this application.",
                "error_uri": f"{DOCS}/apps/managing-oauth-apps/troubleshooting-authorization-"
                "request-errors/#redirect-uri-mismatch",
                **extra,
            }
            return finish(RedirectResponse(with_query(state.config.callback_url, params), 302))
        if q.get("sandbox_deny", "").lower() in ("1", "true"):
            params = {
                "error": "access_denied",
                "error_description": "The user has denied your application access.",
                "error_uri": f"{DOCS}/apps/managing-oauth-apps/troubleshooting-authorization-"
                "request-errors/#access-denied",
                **extra,
            }
            return finish(RedirectResponse(with_query(redirect_uri, params), 302))
        try:
            user = state.pick_user(q.get("sandbox_user"))
        except KeyError:
            return error_page(404, "Unknown sandbox_user")
        code = state.new_code(user, redirect_uri)
        return finish(RedirectResponse(with_query(redirect_uri, {"code": code, **extra}), 302))

    async def access_token(request: Request) -> Response:
        try:
            p = await request_params(request)
        except ValueError:
            p = {}
        if p.get("grant_type") == "refresh_token":
            principal = state.principal_for_refresh(p.get("refresh_token"))
        else:
            principal = state.principal_for_code(p.get("code"))
        guarded = await oauth_guard(request, "POST /login/oauth/access_token", principal)
        if guarded is not None:
            return guarded
        grant = p.get("grant_type") or "authorization_code"
        if grant == "authorization_code":
            body = state.exchange_code(p)
        elif grant == "refresh_token":
            body = state.refresh(p)
        else:
            body = state.oauth_error(
                "unsupported_grant_type", "The grant type is not supported.", "unsupported-grant"
            )
        if "application/json" in request.headers.get("accept", ""):
            return finish(JSONResponse(body))
        return finish(
            Response(
                urlencode({k: str(v) for k, v in body.items()}),
                media_type="application/x-www-form-urlencoded; charset=utf-8",
            )
        )

    async def app_revoke(request: Request) -> Response:
        what = request.path_params["what"]
        endpoint = f"DELETE /applications/{{client_id}}/{what}"
        guarded = await oauth_guard(request, endpoint, None)
        if guarded is not None:
            return guarded
        if what not in ("token", "grant"):
            return finish(_error(404, "Not Found", f"{DOCS}/rest", {}))
        creds = basic_credentials(request)
        if (
            creds is None
            or creds[0] != request.path_params["client_id"]
            or not state.check_client(*creds)
        ):
            return finish(_error(404, "Not Found", f"{DOCS}/rest/apps/oauth-applications", {}))
        try:
            body = await json_body(request)
        except ValueError:
            return finish(_error(400, "Problems parsing JSON", f"{DOCS}/rest", {}))
        value = str(body.get("access_token", ""))
        principal = state.principal_for_token(value)
        if principal is None:
            return finish(_error(404, "Not Found", f"{DOCS}/rest/apps/oauth-applications", {}))
        if what == "grant":
            state.revoke(principal)
        else:
            state.revoke_token(value)
        return finish(Response(status_code=204))

    routes = [
        *state.control_routes(),
        Route("/login/oauth/authorize", authorize, methods=["GET"]),
        Route("/login/oauth/access_token", access_token, methods=["POST"]),
        Route("/applications/{client_id}/{what:str}", app_revoke, methods=["DELETE"]),
        Route("/graphql", graphql, methods=["POST"]),
        rest_route("/user", get_user, requires_auth=True),
        rest_route("/users/{username}", get_named_user),
        rest_route("/users/{username}/events", events),
        rest_route("/users/{username}/events/public", events),
        rest_route("/rate_limit", rate_limit, free=True),
        *[
            rest_route("/{rest:path}", unknown, "/*", method)
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
        ],
    ]
    return sandbox_app(state, routes)
