"""Supabase REST (PostgREST) sandbox: upserts and simple reads on in-memory tables.

``POST /rest/v1/<table>?on_conflict=<cols>`` takes one row or an array (a batch, all or
nothing); with ``Prefer: resolution=merge-duplicates`` a row whose key exists is merged,
without it the key conflict is PostgreSQL's 23505. ``GET /rest/v1/<table>?<col>=eq.<v>``
filters. Every request needs the project's key in ``apikey`` and a bearer token; errors are
PostgREST's ``{code, details, hint, message}``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync_pipeline.sandbox.common import (
    Clock,
    ControlHooks,
    FaultBook,
    apply_delay,
    bearer,
    control_routes,
)


@dataclass
class Table:
    """A table: its columns and primary key, rows by key."""

    columns: tuple[str, ...]
    primary_key: tuple[str, ...]
    rows: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)


def _error(status: int, code: str, message: str, details: Any = None, hint: Any = None) -> Response:
    body = {"code": code, "details": details, "hint": hint, "message": message}
    return JSONResponse(body, status)


class SupabaseState:
    """Tables, keys and counters."""

    def __init__(self, clock: Clock, service_key: str = "sbx-service-role-key") -> None:
        self.clock = clock
        self.service_key = service_key
        self.tables: dict[str, Table] = {}
        self.faults = FaultBook()
        self.requests = 0
        self.rows_written = 0
        self._lock = threading.Lock()

    def create_table(
        self, name: str, columns: tuple[str, ...], primary_key: tuple[str, ...]
    ) -> None:
        """Define a table (the project's migrations, here)."""
        self.tables[name] = Table(columns, primary_key)

    def rows(self, name: str) -> list[dict[str, Any]]:
        """All rows of a table."""
        with self._lock:
            return [dict(r) for r in self.tables[name].rows.values()]


def create_app(state: SupabaseState) -> Starlette:
    """The Starlette app serving ``/rest/v1/...`` and ``/_sandbox``."""

    async def guard(request: Request) -> Response | None:
        state.requests += 1
        key = request.headers.get("apikey")
        fault = state.faults.take(request.url.path, key)
        if fault is not None and not await apply_delay(fault, request):
            if fault.kind == "timeout":
                return Response(status_code=504)
            status = fault.status or (429 if fault.kind == "429" else 503)
            return _error(status, "PGRST000", "Could not connect with the database")
        if not key:
            return JSONResponse(
                {
                    "message": "No API key found in request",
                    "hint": "No `apikey` request header or url param was found.",
                },
                401,
            )
        if key != state.service_key:
            return JSONResponse(
                {
                    "message": "Invalid API key",
                    "hint": "Double check your Supabase `anon` or `service_role` API key.",
                },
                401,
            )
        if bearer(request) != state.service_key:
            return _error(401, "PGRST301", "JWSError JWSInvalidSignature")
        return None

    def table_of(request: Request) -> tuple[str, Table | None]:
        name = request.path_params["table"]
        return name, state.tables.get(name)

    def missing(name: str) -> Response:
        return _error(
            404,
            "PGRST205",
            f"Could not find the table 'public.{name}' in the schema cache",
        )

    async def upsert(request: Request) -> Response:
        refused = await guard(request)
        if refused is not None:
            return refused
        name, table = table_of(request)
        if table is None:
            return missing(name)
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError as exc:
            return _error(400, "PGRST102", "Empty or invalid json", details=str(exc))
        rows = body if isinstance(body, list) else [body]
        if not rows or not all(isinstance(r, dict) for r in rows):
            return _error(400, "PGRST102", "Empty or invalid json")
        keys = set(rows[0])
        if any(set(r) != keys for r in rows):
            return _error(400, "PGRST102", "All object keys must match")
        for col in keys:
            if col not in table.columns:
                return _error(
                    400,
                    "PGRST204",
                    f"Could not find the '{col}' column of '{name}' in the schema cache",
                )
        conflict_cols = (
            tuple(c for c in (request.query_params.get("on_conflict") or "").split(",") if c)
            or table.primary_key
        )
        if conflict_cols != table.primary_key:
            return _error(
                400,
                "42P10",
                "there is no unique or exclusion constraint matching the ON CONFLICT specification",
            )
        prefer = {p.strip() for part in request.headers.getlist("prefer") for p in part.split(",")}
        merge = "resolution=merge-duplicates" in prefer
        ignore = "resolution=ignore-duplicates" in prefer
        with state._lock:
            staged = dict(table.rows)
            for row in rows:
                if any(row.get(c) is None for c in table.primary_key):
                    return _error(
                        400,
                        "23502",
                        f'null value in column "{table.primary_key[0]}" of relation '
                        f'"{name}" violates not-null constraint',
                    )
                pk = tuple(row[c] for c in table.primary_key)
                if pk in staged:
                    if ignore:
                        continue
                    if not merge:
                        cols = ", ".join(table.primary_key)
                        vals = ", ".join(str(v) for v in pk)
                        return _error(
                            409,
                            "23505",
                            f'duplicate key value violates unique constraint "{name}_pkey"',
                            details=f"Key ({cols})=({vals}) already exists.",
                        )
                    staged[pk] = {**staged[pk], **row}
                else:
                    staged[pk] = {c: row.get(c) for c in table.columns}
            table.rows = staged
            state.rows_written += len(rows)
        if "return=representation" in prefer:
            written = [table.rows[tuple(r[c] for c in table.primary_key)] for r in rows]
            return JSONResponse(written, 201)
        return Response(status_code=201)

    async def select(request: Request) -> Response:
        refused = await guard(request)
        if refused is not None:
            return refused
        name, table = table_of(request)
        if table is None:
            return missing(name)
        filters = []
        for col, value in request.query_params.items():
            if col in ("select", "order", "limit", "offset"):
                continue
            op, _, operand = value.partition(".")
            if col not in table.columns:
                return _error(400, "42703", f"column {name}.{col} does not exist")
            if op != "eq":
                return _error(400, "PGRST100", f'"failed to parse filter ({value})"')
            filters.append((col, operand))
        with state._lock:
            out = [
                dict(r) for r in table.rows.values() if all(str(r.get(c)) == v for c, v in filters)
            ]
        return JSONResponse(out)

    def stats() -> dict[str, Any]:
        return {"requests": state.requests, "rows_written": state.rows_written}

    hooks = ControlHooks(faults=state.faults, clock=state.clock, stats=stats)
    return Starlette(
        routes=[
            Route("/rest/v1/{table}", upsert, methods=["POST"]),
            Route("/rest/v1/{table}", select, methods=["GET"]),
            *control_routes(hooks),
        ]
    )
