"""Starlette app serving Promidata's static catalog files and ``/_sandbox`` control routes.

Files are served as a static object store serves them: ``ETag``, ``Last-Modified`` and
``If-None-Match`` → 304 on ``Import.txt``; product JSON and images carry their own ETag.
Faults (``/_sandbox/faults``) match a path substring and the supplier code as principal.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sync_pipeline.sandbox.common import (
    ControlHooks,
    apply_delay,
    control_endpoint,
    control_routes,
    json_body,
)
from sync_pipeline.sandbox.promidata.state import PromidataSandboxState

_IMAGE_NAME = re.compile(r"^([0-9a-f]{64})\.(jpg|png)$")
_NOT_FOUND = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
    "<Message>The specified key does not exist.</Message></Error>"
)
_HTML = b"<!DOCTYPE html><html><body><h1>Service temporarily unavailable</h1></body></html>"


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    return any(c.strip() in ("*", etag) for c in header.split(","))


def _not_found() -> Response:
    return Response(_NOT_FOUND, 404, media_type="application/xml")


def create_app(state: PromidataSandboxState) -> Starlette:
    """The Promidata sandbox app over ``state``."""

    async def fault_response(request: Request, supplier: str) -> tuple[Response | None, str]:
        """A response standing in for the real one, or None; and the content fault kind."""
        fault = state.faults.take(request.url.path, supplier)
        if fault is None:
            return None, ""
        if fault.kind in ("slow", "timeout"):
            if await apply_delay(fault, request):
                return None, ""
            return Response("Gateway Timeout", 504), ""
        if fault.kind == "5xx":
            return Response(_HTML, fault.status or 503, media_type="text/html"), ""
        if fault.kind == "429":
            return Response("Slow Down", 429, headers={"Retry-After": "1"}), ""
        if fault.kind == "error":
            return Response("error", fault.status or 500), ""
        if fault.kind == "missing":
            return _not_found(), ""
        return None, fault.kind

    def first_request(request: Request) -> None:
        if not state.base_url:
            state.set_base_url(str(request.base_url))

    async def import_txt(request: Request) -> Response:
        first_request(request)
        supplier = request.path_params["supplier"]
        try:
            body, etag, modified = state.import_txt(supplier)
        except KeyError:
            return _not_found()
        replaced, _ = await fault_response(request, supplier)
        if replaced is not None:
            state.count("import_error", supplier)
            return replaced
        headers = {"ETag": etag, "Last-Modified": modified, "Cache-Control": "max-age=0"}
        if _etag_matches(request.headers.get("if-none-match"), etag):
            state.count("import_304", supplier)
            return Response(status_code=304, headers=headers)
        state.count("import", supplier)
        return Response(body, 200, media_type="text/plain; charset=utf-8", headers=headers)

    async def cat_csv(request: Request) -> Response:
        first_request(request)
        supplier = request.path_params["supplier"]
        try:
            body = state.cat_csv(supplier)
        except KeyError:
            return _not_found()
        state.count("cat", supplier)
        return Response(body, 200, media_type="text/csv; charset=utf-8")

    async def product(request: Request) -> Response:
        state.enter("product")
        try:
            return await product_file(request)
        finally:
            state.leave("product")

    async def image(request: Request) -> Response:
        state.enter("image")
        try:
            return await image_file(request)
        finally:
            state.leave("image")

    async def product_file(request: Request) -> Response:
        first_request(request)
        supplier, sku = request.path_params["supplier"], request.path_params["sku"]
        try:
            body = state.product_json(supplier, sku)
        except KeyError:
            return _not_found()
        replaced, content = await fault_response(request, supplier)
        state.count("product", supplier)
        if replaced is not None:
            return replaced
        if content == "truncated":
            body = body[: len(body) // 2]
        elif content == "invalid_json":
            body = b"<html><body>Bad Gateway</body></html>"
        elif content == "hash_mismatch":
            body = body.replace(b'"Errors": []', b'"Errors": ["changed during upload"]', 1)
        etag = f'"{hashlib.md5(body).hexdigest()}"'
        return Response(body, 200, media_type="application/json", headers={"ETag": etag})

    async def image_file(request: Request) -> Response:
        first_request(request)
        supplier, name = request.path_params["supplier"], request.path_params["name"]
        match = _IMAGE_NAME.match(name)
        found = state.image_by_hash(match.group(1)) if match else None
        if found is None:
            return _not_found()
        replaced, content = await fault_response(request, supplier)
        state.count("image", supplier)
        if replaced is not None:
            return replaced
        data, media_type = found
        if content == "not_image":
            data, media_type = _HTML, media_type  # a CDN error page labelled as an image
        elif content == "oversize":
            from sync_pipeline.sandbox.promidata.images import jpeg

            data = jpeg([128], f"oversize {name}", padding=3_000_000)
        etag = f'"{hashlib.md5(data).hexdigest()}"'
        return Response(data, 200, media_type=media_type, headers={"ETag": etag})

    # ---------------------------------------------------------------------- control
    async def suppliers(request: Request) -> Any:
        if request.method == "POST":
            body = await json_body(request)
            return state.add_supplier(str(body["code"]), int(body.get("families", 3)))
        return [state.describe(code) for code in state.codes()]

    def _selection(body: dict[str, Any]) -> tuple[list[str] | None, int | None]:
        skus = body.get("skus")
        count = body.get("count")
        return (None if skus is None else [str(s) for s in skus]), (
            None if count is None else int(count)
        )

    async def edit(request: Request) -> Any:
        skus, count = _selection(await json_body(request))
        return {"skus": state.edit_families(request.path_params["code"], skus, count)}

    async def add(request: Request) -> Any:
        body = await json_body(request)
        return {"skus": state.add_families(request.path_params["code"], int(body.get("count", 1)))}

    async def remove(request: Request) -> Any:
        skus, count = _selection(await json_body(request))
        return {"skus": state.remove_families(request.path_params["code"], skus, count)}

    async def change_image(request: Request) -> Any:
        body = await json_body(request)
        return state.change_image(
            request.path_params["code"], request.path_params["sku"], int(body.get("variant", 0))
        )

    async def poison(request: Request) -> Any:
        body = await json_body(request)
        kind = body.get("kind")
        digest = state.poison_family(
            request.path_params["code"],
            request.path_params["sku"],
            None if kind is None else str(kind),
        )
        return {"hash": digest}

    async def expected(request: Request) -> Any:
        return state.expected(request.path_params["code"])

    async def reset_stats(request: Request) -> Any:
        state.reset_stats()
        return {"ok": True}

    fam = "/_sandbox/suppliers/{code}/families"
    extra = [
        Route("/_sandbox/suppliers", control_endpoint(suppliers), methods=["GET", "POST"]),
        Route(f"{fam}/edit", control_endpoint(edit), methods=["POST"]),
        Route(f"{fam}/add", control_endpoint(add), methods=["POST"]),
        Route(f"{fam}/remove", control_endpoint(remove), methods=["POST"]),
        Route(f"{fam}/{{sku}}/image", control_endpoint(change_image), methods=["POST"]),
        Route(f"{fam}/{{sku}}/poison", control_endpoint(poison), methods=["POST"]),
        Route("/_sandbox/suppliers/{code}/expected", control_endpoint(expected), methods=["GET"]),
        Route("/_sandbox/reset-stats", control_endpoint(reset_stats), methods=["POST"]),
    ]
    hooks = ControlHooks(faults=state.faults, clock=state.time, stats=state.stats, extra=extra)

    async def unknown(request: Request) -> Response:
        return _not_found()

    routes = [
        *control_routes(hooks),
        Route("/Images/LiveR2/{supplier}/{name}", image, methods=["GET"]),
        Route("/{supplier}/Import/Import.txt", import_txt, methods=["GET"]),
        Route("/{supplier}/Import/CAT.csv", cat_csv, methods=["GET"]),
        Route("/{supplier}/{sku}.json", product, methods=["GET"]),
        Route("/{rest:path}", unknown, methods=["GET", "HEAD"]),
    ]
    app = Starlette(routes=routes)
    app.state.sandbox = state
    return app
