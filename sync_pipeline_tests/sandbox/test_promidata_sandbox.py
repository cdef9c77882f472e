"""Tests of the Promidata sandbox over real HTTP on loopback."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sync_pipeline.sandbox.promidata import (
    PromidataSandboxConfig,
    PromidataSandboxState,
    create_app,
)
from sync_pipeline.sandbox.promidata.images import JPEG_MAGIC, PNG_MAGIC
from sync_pipeline.sandbox.server import SandboxServer

LINE = re.compile(r"^(https?://[^|]+)\|([0-9A-F]{40})$")


@dataclass
class Box:
    """A running Promidata sandbox and a client on it."""

    state: PromidataSandboxState
    client: httpx.Client

    def lines(self, supplier: str) -> list[tuple[str, str]]:
        """(url, hash) of every Import.txt line."""
        response = self.client.get(f"/{supplier}/Import/Import.txt")
        assert response.status_code == 200
        out = []
        for line in response.text.splitlines():
            match = LINE.match(line)
            assert match, line
            out.append((match.group(1), match.group(2)))
        return out

    def products(self, supplier: str) -> dict[str, str]:
        """SKU → hash of the product lines."""
        return {
            url.rsplit("/", 1)[-1].removesuffix(".json"): h
            for url, h in self.lines(supplier)
            if url.endswith(".json")
        }

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST a control route; its JSON."""
        response = self.client.post(f"/_sandbox{path}", json=body or {})
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def box() -> Iterator[Box]:
    """The sandbox with its three demo suppliers."""
    state = PromidataSandboxState(PromidataSandboxConfig(seed=7))
    with (
        SandboxServer(create_app(state)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        yield Box(state, client)


def test_import_txt_lists_one_hashed_line_per_family_plus_cat_csv(box: Box) -> None:
    lines = box.lines("A23")
    assert lines[0][0].endswith("/A23/Import/CAT.csv")
    products = [(u, h) for u, h in lines if u.endswith(".json")]
    assert len(products) == 6 and len(lines) == 7
    for url, digest in products:
        body = box.client.get(url).content
        assert hashlib.sha1(body).hexdigest().upper() == digest
    cat = box.client.get(lines[0][0])
    assert hashlib.sha1(cat.content).hexdigest().upper() == lines[0][1]
    assert all(len(row.split(";")) == 3 for row in cat.text.splitlines())


def test_import_txt_is_conditional_and_changes_with_the_catalog(box: Box) -> None:
    first = box.client.get("/A23/Import/Import.txt")
    etag = first.headers["etag"]
    assert first.headers["last-modified"].endswith("GMT")
    again = box.client.get("/A23/Import/Import.txt", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    box.control("/suppliers/A23/families/edit", {"count": 1})
    changed = box.client.get("/A23/Import/Import.txt", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert box.state.stats()["import_304:A23"] == 1


def test_product_json_has_the_promidata_shape(box: Box) -> None:
    sku, _ = next(iter(box.products("A360").items()))
    doc = box.client.get(f"/A360/{sku}.json").json()
    assert doc["Sku"] == sku and doc["ANumber"] == "A360"
    assert {"SupplierSku", "Ean", "DefaultProducts", "ImprintPositions", "Errors"} <= set(doc)
    languages = set(doc["ProductDetails"])
    assert {"de", "en"} <= languages
    for child in doc["ChildProducts"]:
        assert child["Sku"].startswith(f"{sku}-") and len(child["Ean"]) == 13
        assert set(child["ProductDetails"]) == languages
        for region in child["ProductPriceCountryBased"].values():
            tiers = region["GeneralBuyingPrice"]
            assert [t["Quantity"] for t in tiers] == sorted(t["Quantity"] for t in tiers)
    details = doc["NonLanguageDependedProductDetails"]
    assert "/" in details["Category"] or details["Category"].isupper()
    en = doc["ProductDetails"]["en"]
    assert en["Image"]["Url"] == en["MediaGalleryImages"][0]["Url"]


def test_languages_and_regions_vary_by_supplier() -> None:
    state = PromidataSandboxState(PromidataSandboxConfig(suppliers={"A": 1, "B": 1, "C": 1}))
    described = [state.describe(code) for code in state.codes()]
    assert len({tuple(d["regions"]) for d in described}) == 3


def test_images_are_content_addressed_valid_and_shared(box: Box) -> None:
    urls: list[str] = []
    for sku in box.products("A23"):
        doc = box.client.get(f"/A23/{sku}.json").json()
        urls += [c["ProductDetails"]["de"]["Image"]["Url"] for c in doc["ChildProducts"]]
    assert len(set(urls)) < len(urls)  # a pool of 0.75 images per variant is shared
    kinds = set()
    for url in set(urls):
        response = box.client.get(url)
        assert response.status_code == 200
        name = url.rsplit("/", 1)[-1]
        assert hashlib.sha256(response.content).hexdigest() == name.split(".")[0]
        magic = PNG_MAGIC if name.endswith(".png") else JPEG_MAGIC
        assert response.content.startswith(magic) and len(response.content) < 2000
        kinds.add(response.headers["content-type"])
    assert kinds == {"image/jpeg", "image/png"}


def test_same_seed_same_catalog() -> None:
    a = PromidataSandboxState(PromidataSandboxConfig(seed=3))
    b = PromidataSandboxState(PromidataSandboxConfig(seed=3))
    for state in (a, b):
        state.set_base_url("http://h")
    assert a.import_txt("A23")[0] == b.import_txt("A23")[0]


def test_large_suppliers_are_generated_lazily() -> None:
    state = PromidataSandboxState(PromidataSandboxConfig(suppliers={"BIG": 10_000}))
    assert state.describe("BIG")["families"] == 10_000
    assert state.describe("BIG")["image_pool"] == 30_000
    assert not state.supplier("BIG").hashes  # nothing generated before Import.txt is asked


def test_edit_add_remove_change_the_listed_hashes(box: Box) -> None:
    before = box.products("A23")
    edited = box.control("/suppliers/A23/families/edit", {"count": 2})["skus"]
    added = box.control("/suppliers/A23/families/add", {"count": 1})["skus"]
    removed = box.control("/suppliers/A23/families/remove", {"skus": [edited[0]]})["skus"]
    after = box.products("A23")
    assert set(after) == (set(before) | set(added)) - set(removed)
    changed = {sku for sku in before if sku in after and before[sku] != after[sku]}
    assert changed == {edited[1]}
    assert box.client.get(f"/A23/{removed[0]}.json").status_code == 404


def test_changing_an_image_changes_its_url_and_the_family_hash(box: Box) -> None:
    before = box.products("A23")
    sku = next(iter(before))
    result = box.control(f"/suppliers/A23/families/{sku}/image", {"variant": 0})
    doc = box.client.get(f"/A23/{sku}.json").json()
    assert doc["ChildProducts"][0]["ProductDetails"]["de"]["Image"]["Url"] == result["new"]
    assert result["new"] != result["old"] and box.products("A23")[sku] != before[sku]
    assert box.client.get(result["new"]).status_code == 200


@pytest.mark.parametrize("kind", ["invalid_json", "missing_field", "unknown_language"])
def test_poisoned_families_are_listed_with_the_hash_of_their_bad_bytes(box: Box, kind: str) -> None:
    sku = next(iter(box.products("D170")))
    box.control(f"/suppliers/D170/families/{sku}/poison", {"kind": kind})
    body = box.client.get(f"/D170/{sku}.json").content
    assert hashlib.sha1(body).hexdigest().upper() == box.products("D170")[sku]
    if kind == "invalid_json":
        with pytest.raises(json.JSONDecodeError):
            json.loads(body)
    elif kind == "missing_field":
        assert "ChildProducts" not in json.loads(body)
    else:
        assert "xx" in json.loads(body)["ProductDetails"]


@pytest.mark.parametrize(
    ("kind", "target", "check"),
    [
        ("5xx", "json", lambda r, ok: r.status_code == 503),
        ("error", "json", lambda r, ok: r.status_code == 500),
        ("missing", "image", lambda r, ok: r.status_code == 404),
        (
            "truncated",
            "json",
            lambda r, ok: r.status_code == 200 and r.content == ok[: len(ok) // 2],
        ),
        ("invalid_json", "json", lambda r, ok: r.status_code == 200 and r.content.startswith(b"<")),
        (
            "hash_mismatch",
            "json",
            lambda r, ok: r.status_code == 200 and r.json()["Errors"] and r.content != ok,
        ),
        ("not_image", "image", lambda r, ok: r.content.startswith(b"<!DOCTYPE")),
        ("oversize", "image", lambda r, ok: len(r.content) > 2_000_000),
        ("timeout", "json", lambda r, ok: r.status_code == 504),
        ("slow", "json", lambda r, ok: r.status_code == 200 and r.content == ok),
    ],
)
def test_faults_fire_once_on_the_matching_path(
    box: Box, kind: str, target: str, check: Any
) -> None:
    sku = next(iter(box.products("A23")))
    url = f"/A23/{sku}.json"
    if target == "image":
        doc = box.client.get(url).json()
        url = doc["ChildProducts"][0]["ProductDetails"]["de"]["Image"]["Url"]
    ok = box.client.get(url).content
    fault = {"kind": kind, "path_contains": url.rsplit("/", 1)[-1], "delay": 0.2}
    assert box.client.post("/_sandbox/faults", json=fault).status_code == 200
    assert check(box.client.get(url), ok)
    assert box.client.get(url).content == ok  # count 1: the next request is normal


def test_faults_match_the_supplier(box: Box) -> None:
    box.control("/faults", {"kind": "5xx", "principal": "A360", "count": 5})
    assert box.client.get("/A23/Import/Import.txt").status_code == 200
    assert box.client.get("/A360/Import/Import.txt").status_code == 503


def test_expected_summarises_what_a_sync_must_store(box: Box) -> None:
    expected = box.client.get("/_sandbox/suppliers/A23/expected").json()
    assert set(expected["families"]) == set(box.products("A23"))
    variants = sum(len(f["variants"]) for f in expected["families"].values())
    assert variants == sum(2 + f % 5 for f in range(6))
    assert len(expected["images"]) == round(variants * 0.75)


def test_unknown_paths_and_suppliers_are_404(box: Box) -> None:
    assert box.client.get("/NOPE/Import/Import.txt").status_code == 404
    assert box.client.get("/A23/A23-999999.json").status_code == 404
    assert box.client.get(f"/Images/LiveR2/A23/{'0' * 64}.jpg").status_code == 404
    bad = box.client.post("/_sandbox/suppliers/A23/families/edit", json={"skus": ["X"]})
    assert bad.status_code == 400
