"""Hunter API v2 sandbox: domain search, e-mail finder, its limits and error bodies.

Hunter enforces, per API key, 15 requests per second and 500 per minute (answered ``403``)
and a monthly allowance of search credits (answered ``429`` once spent). It sends no
rate-limit headers. A search that finds nothing costs no credit. The key goes in the
``api_key`` query parameter or the ``X-API-KEY`` header. Companies' websites are served under
``/_sandbox/sites/<domain>`` so that a website check has something real to fetch.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sync_pipeline.sandbox.common import (
    Clock,
    ControlHooks,
    FaultBook,
    WindowCounter,
    apply_delay,
    control_routes,
)


@dataclass
class Person:
    """Someone working at a company, as the finder knows them."""

    first_name: str
    last_name: str
    email: str
    score: int
    position: str | None = None


@dataclass
class Company:
    """A company Hunter knows: its domain, whether its site answers, its people."""

    name: str
    domain: str
    website_up: bool = True
    people: list[Person] = field(default_factory=list)
    pattern: str = "{first}.{last}"


@dataclass
class HunterConfig:
    """Keys, limits and the data the sandbox answers with."""

    api_keys: set[str] = field(default_factory=lambda: {"sbx-hunter-key"})
    per_second: int = 15
    per_minute: int = 500
    monthly_credits: int = 25_000


def month_start(now: float) -> float:
    """Start (UTC) of the billing month containing `now` (calendar months)."""
    day = dt.datetime.fromtimestamp(now, dt.UTC)
    return dt.datetime(day.year, day.month, 1, tzinfo=dt.UTC).timestamp()


class HunterState:
    """Companies and the per-key usage windows."""

    def __init__(self, config: HunterConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.companies: dict[str, Company] = {}  # by domain
        self.windows = WindowCounter()
        self.faults = FaultBook()
        self.requests = 0
        self.credits_used = 0
        self.rejected: dict[int, int] = {}
        self._lock = threading.Lock()

    def add_company(self, company: Company) -> None:
        """Make a company findable."""
        self.companies[company.domain.lower()] = company

    def by_name(self, name: str) -> Company | None:
        """A company by its name (case-insensitive)."""
        wanted = name.strip().lower()
        return next((c for c in self.companies.values() if c.name.lower() == wanted), None)

    def admit(self, key: str) -> tuple[int, str, str] | None:
        """Count a request against the rate windows: None, or (status, id, details)."""
        now = self.clock()
        with self._lock:
            self.requests += 1
            sec_start = WindowCounter.aligned_start(now, 1)
            min_start = WindowCounter.aligned_start(now, 60)
            second = self.windows.peek(f"{key}:s", sec_start)
            minute = self.windows.peek(f"{key}:m", min_start)
            if second >= self.config.per_second or minute >= self.config.per_minute:
                self.rejected[403] = self.rejected.get(403, 0) + 1
                return 403, "too_many_requests", "You have reached the rate limit."
            self.windows.add(f"{key}:s", sec_start)
            self.windows.add(f"{key}:m", min_start)
        return None

    def spend_credit(self, key: str) -> tuple[int, str, str] | None:
        """Charge one search credit: None, or the 429 once the month's credits are spent."""
        start = month_start(self.clock())
        with self._lock:
            if self.windows.peek(f"{key}:credits", start) >= self.config.monthly_credits:
                self.rejected[429] = self.rejected.get(429, 0) + 1
                return (
                    429,
                    "too_many_requests",
                    "You've reached the limit for the number of searches per billing period "
                    "included in your plan.",
                )
            self.windows.add(f"{key}:credits", start)
            self.credits_used += 1
        return None

    def credits_left(self, key: str) -> int:
        """Searches left this month for a key."""
        used = self.windows.peek(f"{key}:credits", month_start(self.clock()))
        return max(0, self.config.monthly_credits - used)


def _errors(status: int, error_id: str, details: str) -> JSONResponse:
    return JSONResponse({"errors": [{"id": error_id, "code": status, "details": details}]}, status)


def create_app(state: HunterState, *, advance: Any = None) -> Starlette:
    """The Starlette app serving ``/v2/...``, the sites and ``/_sandbox``."""

    async def guarded(request: Request) -> tuple[str | None, Response | None]:
        key = request.query_params.get("api_key") or request.headers.get("x-api-key")
        fault = state.faults.take(request.url.path, key)
        if fault is not None:
            if await apply_delay(fault, request):
                pass
            elif fault.kind == "timeout":
                return key, _errors(504, "gateway_timeout", "The request timed out.")
            elif fault.kind == "429":
                return key, _errors(429, "too_many_requests", "Usage limit reached.")
            else:
                status = fault.status or 500
                return key, _errors(status, "server_error", "Something went wrong on our end.")
        if not key:
            return key, _errors(401, "authentication_failed", "No API key supplied")
        if key not in state.config.api_keys:
            return key, _errors(401, "authentication_failed", "No user found for the API key.")
        limited = state.admit(key)
        if limited is not None:
            return key, _errors(*limited)
        return key, None

    async def domain_search(request: Request) -> Response:
        key, refused = await guarded(request)
        if refused is not None:
            return refused
        assert key is not None
        params = request.query_params
        domain, company_name = params.get("domain"), params.get("company")
        if not domain and not company_name:
            return _errors(400, "wrong_params", "You are missing the domain or company parameter")
        company = (
            state.companies.get(domain.lower()) if domain else state.by_name(company_name or "")
        )
        meta: dict[str, Any] = {
            "results": 0,
            "limit": 10,
            "offset": 0,
            "params": {"domain": domain, "company": company_name},
        }
        if company is None:
            data: dict[str, Any] = {
                "domain": domain,
                "organization": company_name,
                "pattern": None,
                "emails": [],
            }
            return JSONResponse({"data": data, "meta": meta})  # nothing found: no credit
        spent = state.spend_credit(key)
        if spent is not None:
            return _errors(*spent)
        emails: list[dict[str, Any]] = [
            {
                "value": p.email,
                "type": "personal",
                "confidence": p.score,
                "first_name": p.first_name,
                "last_name": p.last_name,
                "position": p.position,
                "sources": [],
                "verification": {"date": None, "status": None},
            }
            for p in company.people
        ]
        meta["results"] = len(emails)
        data = {
            "domain": company.domain,
            "disposable": False,
            "webmail": False,
            "accept_all": False,
            "pattern": company.pattern,
            "organization": company.name,
            "emails": emails[:10],
        }
        return JSONResponse({"data": data, "meta": meta})

    async def email_finder(request: Request) -> Response:
        key, refused = await guarded(request)
        if refused is not None:
            return refused
        assert key is not None
        params = request.query_params
        domain = params.get("domain") or ""
        first, last = params.get("first_name") or "", params.get("last_name") or ""
        if not domain and not params.get("company"):
            return _errors(400, "wrong_params", "You are missing the domain parameter")
        if not (first and last) and not params.get("full_name"):
            return _errors(400, "wrong_params", "You are missing the first_name parameter")
        company = state.companies.get(domain.lower())
        person = None
        if company is not None:
            person = next(
                (
                    p
                    for p in company.people
                    if p.first_name.lower() == first.lower() and p.last_name.lower() == last.lower()
                ),
                None,
            )
        meta = {"params": {"first_name": first, "last_name": last, "domain": domain}}
        if person is None:
            empty: dict[str, Any] = {"first_name": first, "last_name": last, "email": None}
            empty["score"] = None
            return JSONResponse({"data": {**empty, "domain": domain}, "meta": meta})
        spent = state.spend_credit(key)
        if spent is not None:
            return _errors(*spent)
        found: dict[str, Any] = {
            "first_name": person.first_name,
            "last_name": person.last_name,
            "email": person.email,
            "score": person.score,
            "domain": company.domain if company else domain,
            "accept_all": False,
            "position": person.position,
            "company": company.name if company else None,
            "sources": [],
            "verification": {"date": None, "status": None},
        }
        return JSONResponse({"data": found, "meta": meta})

    async def site(request: Request) -> Response:
        company = state.companies.get(request.path_params["domain"].lower())
        if company is None or not company.website_up:
            return PlainTextResponse("Service Unavailable", 503)
        return PlainTextResponse(f"{company.name}\n")

    async def account(request: Request) -> Response:
        key, refused = await guarded(request)
        if refused is not None:
            return refused
        assert key is not None
        left = state.credits_left(key)
        used = state.config.monthly_credits - left
        data = {"requests": {"searches": {"used": used, "available": state.config.monthly_credits}}}
        return JSONResponse({"data": data})

    def stats() -> dict[str, Any]:
        return {
            "requests": state.requests,
            "credits_used": state.credits_used,
            "rejected": dict(state.rejected),
        }

    hooks = ControlHooks(
        faults=state.faults,
        clock=state.clock,
        advance=advance,
        stats=stats,
        reset_usage=state.windows.reset,
        extra=[Route("/_sandbox/sites/{domain}", site, methods=["GET", "HEAD"])],
    )
    return Starlette(
        routes=[
            Route("/v2/domain-search", domain_search),
            Route("/v2/email-finder", email_finder),
            Route("/v2/account", account),
            *control_routes(hooks),
        ]
    )
