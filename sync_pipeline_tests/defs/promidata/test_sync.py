"""Promidata sync against the sandbox over HTTP: diff by hash, isolation, resume, storage."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlalchemy import func, select

from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import (
    PromidataCategory,
    PromidataFailure,
    PromidataFamily,
    PromidataImage,
    PromidataImageLink,
    PromidataPrice,
    PromidataProgress,
    PromidataText,
    PromidataVariant,
)
from sync_pipeline.core.sync_runner import RunContext
from sync_pipeline.defs.promidata.sync import redrive, sync_catalog
from sync_pipeline_tests.defs.promidata.conftest import Promidata


def stored(db_url: str, supplier: str) -> dict[str, Any]:
    """What the app DB holds for a supplier."""
    with transaction(db_url) as s:
        families = {
            f.sku: f
            for f in s.scalars(select(PromidataFamily).where(PromidataFamily.supplier == supplier))
        }
        variants = {
            v.sku: v
            for v in s.scalars(
                select(PromidataVariant).where(PromidataVariant.supplier == supplier)
            )
        }
        prices = {
            sku: n
            for sku, n in s.execute(
                select(PromidataPrice.variant_sku, func.count())
                .where(PromidataPrice.variant_sku.in_(list(variants)))
                .group_by(PromidataPrice.variant_sku)
            )
        }
        links = list(
            s.scalars(select(PromidataImageLink).where(PromidataImageLink.supplier == supplier))
        )
        images = {i.sha256: i for i in s.scalars(select(PromidataImage))}
        texts = {
            (t.sku, t.language): t
            for t in s.scalars(select(PromidataText).where(PromidataText.sku.in_(list(families))))
        }
        failures = list(
            s.scalars(select(PromidataFailure).where(PromidataFailure.supplier == supplier))
        )
    return {
        "families": families,
        "variants": variants,
        "prices": prices,
        "links": links,
        "images": images,
        "texts": texts,
        "failures": failures,
    }


def assert_matches_sandbox(box: Promidata, supplier: str) -> dict[str, Any]:
    """The DB holds exactly the sandbox's families, variants, prices and images."""
    expected = box.expected(supplier)
    got = stored(box.db_url, supplier)
    active = {sku: f for sku, f in got["families"].items() if f.status == "active"}
    assert set(active) == set(expected["families"])
    for sku, fam in expected["families"].items():
        row = active[sku]
        assert row.synced_hash == row.listed_hash == fam["hash"]
        assert row.category == fam["category"]
        assert got["texts"][(sku, "en")].name == fam["name_en"]
        for vsku, v in fam["variants"].items():
            assert got["variants"][vsku].family_sku == sku
            assert got["variants"][vsku].ean == v["ean"]
            assert got["prices"][vsku] == v["prices"]
    expected_variants = {v for f in expected["families"].values() for v in f["variants"]}
    assert {s for s, v in got["variants"].items() if v.family_sku in active} == expected_variants
    owners = set(active) | {s for s, v in got["variants"].items() if v.family_sku in active}
    linked = {link.image_sha256 for link in got["links"] if link.owner_sku in owners}
    assert linked == set(expected["images"])
    assert linked <= set(got["images"])
    return got


def test_first_sync_stores_exactly_the_sandbox_catalog(promidata: Promidata) -> None:
    result = promidata.sync("A23")
    assert result["status"] == "succeeded", result
    assert result["productsProcessed"] == 6 and result["errors"] == 0
    got = assert_matches_sandbox(promidata, "A23")
    files = [p for p in promidata.images_dir.rglob("*") if p.is_file()]
    assert len(files) == len(promidata.expected("A23")["images"])
    for path in files:
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == path.name
        assert got["images"][path.name].size == len(data)
        assert data[:3] == b"\xff\xd8\xff" or data[:4] == b"\x89PNG"
    with transaction(promidata.db_url) as s:
        assert s.scalar(select(func.count()).select_from(PromidataCategory)) == 10
    requests = promidata.requests()
    assert requests["product:A23"] == 6
    assert requests["image:A23"] == len(files)  # each distinct image downloaded once


def test_second_sync_fetches_exactly_the_edited_families(promidata: Promidata) -> None:
    promidata.sync("A23")
    promidata.requests()
    edited = promidata.control("/suppliers/A23/families/edit", {"count": 2})["skus"]
    result = promidata.sync("A23")
    assert result["productsProcessed"] == 2 and result["skipped"] == 4
    requests = promidata.requests()
    assert requests["import:A23"] == 1 and requests["product:A23"] == 2
    assert "image:A23" not in requests  # an edit that keeps the images downloads none
    got = assert_matches_sandbox(promidata, "A23")
    assert all(got["families"][sku].synced_hash for sku in edited)


def test_an_unchanged_catalog_costs_one_304(promidata: Promidata) -> None:
    promidata.sync("A360")
    promidata.requests()
    result = promidata.sync("A360")
    assert result["productsProcessed"] == 0 and result["skipped"] == 4
    assert promidata.requests() == {"import_304": 1, "import_304:A360": 1}


def test_removed_families_are_discontinued_and_new_ones_added(promidata: Promidata) -> None:
    promidata.sync("A23")
    removed = promidata.control("/suppliers/A23/families/remove", {"count": 2})["skus"]
    added = promidata.control("/suppliers/A23/families/add", {"count": 1})["skus"]
    promidata.requests()
    result = promidata.sync("A23")
    assert result["productsProcessed"] == 1
    got = assert_matches_sandbox(promidata, "A23")
    for sku in removed:
        assert got["families"][sku].status == "discontinued"
        assert got["families"][sku].discontinued_at is not None
    assert got["families"][added[0]].status == "active"
    assert promidata.requests()["product:A23"] == 1


def test_a_changed_image_is_stored_and_shared_images_once(promidata: Promidata) -> None:
    promidata.sync("A23")
    before = len([p for p in promidata.images_dir.rglob("*") if p.is_file()])
    sku = next(iter(promidata.expected("A23")["families"]))
    change = promidata.control(f"/suppliers/A23/families/{sku}/image", {"variant": 0})
    promidata.requests()
    result = promidata.sync("A23")
    assert result["imagesUploaded"] == 1
    requests = promidata.requests()
    assert requests["image:A23"] == 1  # only the new image; shared ones are not re-fetched
    new_sha = change["new"].rsplit("/", 1)[-1].split(".")[0]
    assert (promidata.images_dir / "promidata/images" / new_sha[:2] / new_sha).is_file()
    assert len([p for p in promidata.images_dir.rglob("*") if p.is_file()]) == before + 1
    assert_matches_sandbox(promidata, "A23")


def test_images_shared_between_suppliers_are_not_uploaded_twice(promidata: Promidata) -> None:
    promidata.sync("A23")
    got = stored(promidata.db_url, "A23")
    shared = len(got["links"]) - len({link.image_sha256 for link in got["links"]})
    assert shared > 0  # the sandbox shares images between variants and families
    files = [p for p in promidata.images_dir.rglob("*") if p.is_file()]
    assert len(files) == len({link.image_sha256 for link in got["links"]})


@pytest.mark.parametrize(
    ("kind", "error_class", "reason"),
    [
        ("invalid_json", "bad_data", "invalid JSON"),
        ("truncated", "bad_data", "truncated"),
        ("hash_mismatch", "hash_mismatch", "does not match"),
        ("missing", "not_found", "HTTP 404"),
    ],
)
def test_a_bad_family_is_recorded_and_the_rest_syncs(
    promidata: Promidata, kind: str, error_class: str, reason: str
) -> None:
    sku = sorted(promidata.expected("A23")["families"])[2]
    promidata.fault(kind, f"{sku}.json")
    result = promidata.sync("A23")
    assert result["status"] == "succeeded"
    assert result["productsProcessed"] == 5 and result["errors"] == 1
    got = stored(promidata.db_url, "A23")
    (failure,) = got["failures"]
    assert (failure.kind, failure.item, failure.error_class) == ("family", sku, error_class)
    assert reason in failure.reason
    assert got["families"][sku].synced_hash is None
    # the next run retries it on its own (or after a redrive for permanent errors)
    if failure.dead:
        assert redrive(promidata.db_url, "A23", "family", sku) == 1
    promidata.requests()
    again = promidata.sync("A23")
    assert again["productsProcessed"] == 1 and again["errors"] == 0
    assert promidata.requests()["product:A23"] == 1
    assert_matches_sandbox(promidata, "A23")
    assert stored(promidata.db_url, "A23")["failures"] == []


@pytest.mark.parametrize(
    ("poison", "reason"),
    [
        ("invalid_json", "invalid JSON"),
        ("missing_field", "missing required field 'ChildProducts'"),
        ("unknown_language", "unknown language 'xx'"),
    ],
)
def test_poison_families_are_dead_letters_until_their_hash_changes(
    promidata: Promidata, poison: str, reason: str
) -> None:
    sku = sorted(promidata.expected("D170")["families"])[0]
    promidata.control(f"/suppliers/D170/families/{sku}/poison", {"kind": poison})
    result = promidata.sync("D170")
    assert result["productsProcessed"] == 2 and result["errors"] == 1
    (failure,) = stored(promidata.db_url, "D170")["failures"]
    assert failure.dead and reason in failure.reason
    promidata.requests()
    # same hash: not fetched again
    assert promidata.sync("D170")["productsProcessed"] == 0
    assert "product:D170" not in promidata.requests()
    promidata.control(f"/suppliers/D170/families/{sku}/poison", {"kind": None})
    healed = promidata.sync("D170")
    assert healed["productsProcessed"] == 1 and healed["errors"] == 0
    assert_matches_sandbox(promidata, "D170")


def test_transient_failures_are_retried_in_process(promidata: Promidata) -> None:
    sku = sorted(promidata.expected("A360")["families"])[0]
    promidata.fault("5xx", f"{sku}.json", count=2)  # transient_retries=2: third attempt wins
    result = promidata.sync("A360")
    assert result["productsProcessed"] == 4 and result["errors"] == 0
    assert promidata.requests()["product:A360"] == 6


@pytest.mark.parametrize(
    ("kind", "error_class"),
    [("not_image", "bad_image"), ("missing", "not_found"), ("oversize", "bad_image")],
)
def test_a_bad_image_is_recorded_and_the_rest_is_stored(
    promidata: Promidata, kind: str, error_class: str
) -> None:
    promidata.storage = promidata.storage.model_copy(update={"max_image_bytes": 1_000_000})
    sha = sorted(promidata.expected("A360")["images"])[0]
    promidata.fault(kind, sha)
    result = promidata.sync("A360")
    assert result["errors"] == 1 and result["productsProcessed"] == 4
    got = stored(promidata.db_url, "A360")
    (failure,) = got["failures"]
    assert (failure.kind, failure.item, failure.error_class) == ("image", sha, error_class)
    assert sha not in got["images"]
    assert len(got["images"]) == len(promidata.expected("A360")["images"]) - 1
    if failure.dead:
        redrive(promidata.db_url, "A360", "image")
    again = promidata.sync("A360")
    assert again["errors"] == 0 and again["imagesUploaded"] == 1
    assert_matches_sandbox(promidata, "A360")


def test_progress_reaches_100_percent_per_stage(promidata: Promidata) -> None:
    seen: list[dict[str, Any]] = []
    ctx = RunContext(owner="progress-test", run_id="run-1")
    from sync_pipeline.defs.promidata.sync import sync_supplier_direct

    sync_supplier_direct(
        promidata.api, promidata.storage, promidata.db_url, "A23", ctx, on_progress=seen.append
    )
    with transaction(promidata.db_url) as s:
        rows = {p.stage: p for p in s.scalars(select(PromidataProgress))}
    assert set(rows) == {"catalog", "products", "images"}
    for row in rows.values():
        assert row.state == "completed" and row.percent == 100.0 and row.run_id == "run-1"
        assert row.finished_at is not None and row.attempts == 1
    assert rows["products"].figures["families_changed"] == 6
    assert rows["images"].figures["images_uploaded"] == rows["images"].total
    assert [p["state"] for p in seen if p["stage"] == "products"][-1] == "completed"


def test_unknown_supplier_is_refused(promidata: Promidata) -> None:
    outcome = sync_catalog(promidata.api, promidata.db_url, "NOPE", RunContext(owner="t"))
    assert outcome.status == "failed" and "suppliers add NOPE" in (outcome.error or "")
