"""Promidata supplier sync: the pipeline's stages against a plain asyncio + httpx reference.

One supplier of `--families` product families (4 variants each on average, 0.75 distinct
images per variant: 10,000 / 40,000 / 30,000 at the default) is served by the Promidata
sandbox in its own process. Each contender runs in a child process of its own (wall time and
peak RSS as the child's VmHWM), on its own migrated SQLite app database and image directory, at the
same concurrency (3 families, 10 images in flight):

- pipeline: `sync_supplier_direct` — the three stage functions the Dagster assets call
  (leases, per-item shared slots, progress rows, failure records included; no Dagster run
  start-up);
- reference: asyncio + httpx + sqlite3, the same requests (conditional Import.txt, changed
  families, images not stored yet) and the same rows and files, nothing else.

Phases: first sync, then a re-sync after `--changed` (5 %) of the families were edited.
Both results are checked against the sandbox (families, variants, prices and images
stored), and the sandbox counts the requests of each run: a re-sync's lower bound is
1 (Import.txt) + changed families + new images.

Run: ``.venv/bin/python benchmarks/promidata.py`` (``--families 500`` for a quick look).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

SUPPLIER = "BIG"
FAMILIES = 3
IMAGES = 10


# ----------------------------------------------------------------------------- sandbox
def serve_sandbox(families: int, port_file: str) -> None:
    """Child: serve the sandbox until killed (its URL written to `port_file`)."""
    from sync_pipeline.sandbox.promidata import (
        PromidataSandboxConfig,
        PromidataSandboxState,
        create_app,
    )
    from sync_pipeline.sandbox.server import SandboxServer

    state = PromidataSandboxState(PromidataSandboxConfig(suppliers={SUPPLIER: families}))
    server = SandboxServer(create_app(state), log_level="error").start()
    Path(port_file).write_text(server.url)
    import threading

    threading.Event().wait()


# ----------------------------------------------------------------------------- contenders
def run_pipeline(db_url: str, base_url: str, images: str) -> dict[str, Any]:
    """Child: the pipeline's three stages in this process."""
    from sync_pipeline.core.crypto import generate_key
    from sync_pipeline.core.resources import AppDatabaseResource
    from sync_pipeline.core.sync_runner import RunContext
    from sync_pipeline.defs.promidata.resources import PromidataResource
    from sync_pipeline.defs.promidata.storage import PromidataImageStorage
    from sync_pipeline.defs.promidata.sync import Limits, sync_supplier_direct

    started = time.monotonic()  # imports above are start-up, not sync
    app_db = AppDatabaseResource(url=db_url, token_key=generate_key())
    api = PromidataResource(app_db=app_db, base_url=base_url, timeout_seconds=60.0)
    storage = PromidataImageStorage(directory=images)
    result = sync_supplier_direct(
        api,
        storage,
        db_url,
        SUPPLIER,
        RunContext(owner=f"bench-{os.getpid()}"),
        limits=Limits(FAMILIES, IMAGES),
    )
    api.close()
    return {**result, "sync_s": round(time.monotonic() - started, 2)}


PARENT_KINDS = {"GeneralBuyingPrice": "buying", "RecommendedSellingPrice": "selling"}


def reference_rows(doc: dict[str, Any]) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """(variants, prices, texts, links) rows of one family document."""
    supplier, sku = doc["ANumber"], doc["Sku"]
    variants, prices, texts, links = [], [], [], {}

    def images(owner: str, details: dict[str, Any]) -> None:
        for d in details.values():
            for role, refs in (
                ("main", [d.get("Image")]),
                ("gallery", d.get("MediaGalleryImages")),
            ):
                for pos, ref in enumerate(refs or []):
                    if ref and ref.get("Url"):
                        sha = ref["Url"].rsplit("/", 1)[-1].split(".")[0]
                        links[(owner, sha, role)] = (
                            owner,
                            sha,
                            role,
                            supplier,
                            pos if role == "gallery" else 0,
                            ref["Url"],
                        )

    def text_rows(owner: str, details: dict[str, Any]) -> None:
        for lang, d in details.items():
            config = {
                f["ConfigurationName"]: f["ConfigurationValue"]
                for f in d.get("ConfigurationFields") or []
            }
            texts.append(
                (
                    owner,
                    lang,
                    d.get("Name"),
                    d.get("Description"),
                    d.get("ShortDescription"),
                    json.dumps(config),
                )
            )

    text_rows(sku, doc["ProductDetails"])
    images(sku, doc["ProductDetails"])
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    for child in doc["ChildProducts"]:
        details = child.get("ProductDetails") or {}
        conf: dict[str, str] = {}
        for d in details.values():
            for f in d.get("ConfigurationFields") or []:
                conf.setdefault(f["ConfigurationName"], f["ConfigurationValue"])
        nl = child.get("NonLanguageDependedProductDetails") or {}
        variants.append(
            (
                child["Sku"],
                supplier,
                sku,
                child.get("SupplierSku"),
                child.get("Ean"),
                conf.get("Color") or nl.get("SearchColor"),
                conf.get("Size"),
                json.dumps(nl),
                now,
            )
        )
        text_rows(child["Sku"], details)
        images(child["Sku"], details)
        for region, r in (child.get("ProductPriceCountryBased") or {}).items():
            for field, kind in PARENT_KINDS.items():
                for tier in r.get(field) or []:
                    prices.append(
                        (
                            child["Sku"],
                            region,
                            kind,
                            int(tier["Quantity"]),
                            float(tier["Price"]),
                            r.get("Valuta"),
                            r.get("VatPercentage"),
                            r.get("MinimumOrderQuantity"),
                        )
                    )
    return variants, prices, texts, list(links.values())


async def get(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    """GET with the pipeline's transient retries (3, on connection errors and 5xx)."""
    for attempt in range(4):
        try:
            response = await client.get(url, **kwargs)
            if response.status_code < 500 or attempt == 3:
                return response
        except httpx.TransportError:
            if attempt == 3:
                raise
        await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


async def reference(db_path: str, base_url: str, images_dir: str) -> dict[str, Any]:
    """Child: asyncio + httpx + sqlite3 doing the same requests and writes."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    root = Path(images_dir)
    figures = {
        "families_changed": 0,
        "images_uploaded": 0,
        "families_failed": 0,
        "images_failed": 0,
    }
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0) as client:
        etag = conn.execute(
            "SELECT import_etag FROM promidata_suppliers WHERE code=?", (SUPPLIER,)
        ).fetchone()[0]
        r = await get(
            client,
            f"/{SUPPLIER}/Import/Import.txt",
            headers={"If-None-Match": etag} if etag else {},
        )
        if r.status_code == 200:
            listed = {}
            cat_hash = conn.execute(
                "SELECT categories_hash FROM promidata_suppliers WHERE code=?", (SUPPLIER,)
            ).fetchone()[0]
            for line in r.text.splitlines():
                url, _, digest = line.partition("|")
                if url.endswith(".json"):
                    listed[url.rsplit("/", 1)[-1][:-5]] = (url, digest)
                elif url.endswith("/CAT.csv") and digest != cat_hash:
                    cat = (await get(client, url)).text.splitlines()
                    rows = [row.split(";") for row in cat if row]
                    conn.executemany(
                        "INSERT INTO promidata_categories VALUES (?,?,?) "
                        "ON CONFLICT (code) DO UPDATE SET name=excluded.name",
                        [(c[0], c[1], c[2] or None) for c in rows],
                    )
                    conn.execute(
                        "UPDATE promidata_suppliers SET categories_hash=? WHERE code=?",
                        (digest, SUPPLIER),
                    )
            stored = dict(
                conn.execute(
                    "SELECT sku, synced_hash FROM promidata_families WHERE supplier=?", (SUPPLIER,)
                ).fetchall()
            )
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO promidata_families (supplier, sku, url, listed_hash, status, first_seen_at) VALUES (?,?,?,?, 'active', datetime('now')) "
                "ON CONFLICT (supplier, sku) DO UPDATE SET url=excluded.url, listed_hash=excluded.listed_hash, status='active'",
                [
                    (SUPPLIER, sku, url, h)
                    for sku, (url, h) in listed.items()
                    if stored.get(sku, "") != h
                ],
            )
            gone = [(SUPPLIER, sku) for sku in stored if sku not in listed]
            conn.executemany(
                "UPDATE promidata_families SET status='discontinued' WHERE supplier=? AND sku=?",
                gone,
            )
            conn.execute(
                "UPDATE promidata_suppliers SET import_etag=? WHERE code=?",
                (r.headers.get("etag"), SUPPLIER),
            )
            conn.execute("COMMIT")
        todo = conn.execute(
            "SELECT sku, url, listed_hash FROM promidata_families WHERE supplier=? AND status='active' "
            "AND (synced_hash IS NULL OR synced_hash != listed_hash)",
            (SUPPLIER,),
        ).fetchall()
        fam_sem = asyncio.Semaphore(FAMILIES)

        async def family(sku: str, url: str, listed_hash: str) -> None:
            async with fam_sem:
                body = (await get(client, url)).content
            if hashlib.sha1(body).hexdigest().upper() != listed_hash:
                figures["families_failed"] += 1
                return
            variants, prices, texts, links = reference_rows(json.loads(body))
            owners = [sku, *(v[0] for v in variants)]
            marks = ",".join("?" * len(owners))
            conn.execute("BEGIN")
            for table, col in (
                ("promidata_prices", "variant_sku"),
                ("promidata_texts", "sku"),
                ("promidata_image_links", "owner_sku"),
                ("promidata_variants", "sku"),
            ):
                conn.execute(f"DELETE FROM {table} WHERE {col} IN ({marks})", owners)
            conn.executemany("INSERT INTO promidata_variants VALUES (?,?,?,?,?,?,?,?,?)", variants)
            conn.executemany("INSERT INTO promidata_prices VALUES (?,?,?,?,?,?,?,?)", prices)
            conn.executemany("INSERT INTO promidata_texts VALUES (?,?,?,?,?,?)", texts)
            conn.executemany("INSERT INTO promidata_image_links VALUES (?,?,?,?,?,?)", links)
            conn.execute(
                "UPDATE promidata_families SET synced_hash=?, last_fetched_at=datetime('now') WHERE supplier=? AND sku=?",
                (listed_hash, SUPPLIER, sku),
            )
            conn.execute("COMMIT")
            figures["families_changed"] += 1

        await asyncio.gather(*(family(*row) for row in todo))
        pending = conn.execute(
            "SELECT l.image_sha256, min(l.url) FROM promidata_image_links l LEFT JOIN promidata_images i "
            "ON i.sha256 = l.image_sha256 WHERE l.supplier=? AND i.sha256 IS NULL GROUP BY l.image_sha256",
            (SUPPLIER,),
        ).fetchall()
        img_sem = asyncio.Semaphore(IMAGES)

        async def image(sha: str, url: str) -> None:
            path = root / sha[:2] / sha
            if not path.exists():
                async with img_sem:
                    data = (await get(client, url)).content
                if hashlib.sha256(data).hexdigest() != sha or data[:3] not in (
                    b"\xff\xd8\xff",
                    b"\x89PN",
                ):
                    figures["images_failed"] += 1
                    return
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
                figures["images_uploaded"] += 1
            conn.execute(
                "INSERT OR IGNORE INTO promidata_images VALUES (?,?,?,?,?, datetime('now'))",
                (sha, path.stat().st_size, "image/jpeg", f"{sha[:2]}/{sha}", url),
            )

        await asyncio.gather(*(image(sha, url) for sha, url in pending))
    conn.close()
    return figures


# ----------------------------------------------------------------------------- parent
def vm_hwm_mb() -> float:
    """This process's peak RSS since its exec (VmHWM; ru_maxrss would include the fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def new_db(path: Path) -> str:
    """A migrated app DB with the supplier configured."""
    from sync_pipeline.core import db
    from sync_pipeline.defs.promidata.sync import add_supplier

    url = f"sqlite:///{path}"
    db.upgrade(url)
    add_supplier(url, SUPPLIER)
    db.dispose_engines()
    return url


def child(contender: str, db_path: Path, base_url: str, images: Path) -> dict[str, Any]:
    """Run one contender in a child process; its result, wall seconds and peak RSS (MB)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", contender, str(db_path), base_url, str(images)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, _usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    if status != 0:
        raise RuntimeError(f"{contender} failed (status {status})")
    proc.returncode = 0
    result = json.loads(out.strip().splitlines()[-1])
    return {
        "result": result,
        "wall_s": round(wall, 2),
        "sync_s": result.pop("sync_s"),
        "peak_rss_mb": result.pop("vm_hwm_mb"),
    }


def stored_counts(db_path: Path, images: Path) -> dict[str, int]:
    """Rows and files a contender stored."""
    conn = sqlite3.connect(db_path)
    q = lambda sql: int(conn.execute(sql).fetchone()[0])  # noqa: E731
    counts = {
        "families": q(
            "SELECT count(*) FROM promidata_families WHERE status='active' AND synced_hash=listed_hash"
        ),
        "variants": q("SELECT count(*) FROM promidata_variants"),
        "prices": q("SELECT count(*) FROM promidata_prices"),
        "images": q("SELECT count(*) FROM promidata_images"),
        "files": sum(1 for p in images.rglob("*") if p.is_file()),
    }
    conn.close()
    return counts


def main() -> None:
    """Parent: sandbox, both contenders, both phases, one table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--families", type=int, default=10_000)
    parser.add_argument("--changed", type=float, default=0.05)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        contender, db_path, base_url, images = args.child
        started = time.monotonic()
        if contender == "pipeline":
            result = run_pipeline(f"sqlite:///{db_path}", base_url, images)
        else:
            result = asyncio.run(reference(db_path, base_url, images))
        sync_s = time.monotonic() - started
        result.setdefault("sync_s", round(sync_s, 2))
        print(json.dumps({**result, "vm_hwm_mb": vm_hwm_mb()}))
        return
    with tempfile.TemporaryDirectory(prefix="bench-promidata-") as tmp:
        root = Path(tmp)
        port_file = root / "url"
        sandbox = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                f"import promidata; promidata.serve_sandbox({args.families}, {str(port_file)!r})",
            ],
        )
        try:
            deadline = time.monotonic() + 60
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline:
                    raise RuntimeError("sandbox did not start")
                time.sleep(0.1)  # polling for the child's URL file, bounded by the deadline
            url = port_file.read_text()
            control = httpx.Client(base_url=url, timeout=600)
            t = time.monotonic()
            control.get(f"/{SUPPLIER}/Import/Import.txt")  # generate the catalog once
            print(
                f"sandbox generated {args.families} families in {time.monotonic() - t:.1f} s",
                file=sys.stderr,
            )
            expected = control.get(f"/_sandbox/suppliers/{SUPPLIER}/expected").json()
            n_variants = sum(len(f["variants"]) for f in expected["families"].values())
            n_prices = sum(
                v["prices"] for f in expected["families"].values() for v in f["variants"].values()
            )
            want = {
                "families": len(expected["families"]),
                "variants": n_variants,
                "prices": n_prices,
                "images": len(expected["images"]),
                "files": len(expected["images"]),
            }
            paths = {c: (root / f"{c}.db", root / f"{c}-images") for c in ("reference", "pipeline")}
            for c, (db_path, _) in paths.items():
                new_db(db_path)
            rows: list[dict[str, Any]] = []
            for phase in ("first", "resync"):
                if phase == "resync":
                    n = round(args.families * args.changed)
                    control.post(f"/_sandbox/suppliers/{SUPPLIER}/families/edit", json={"count": n})
                    control.get(f"/{SUPPLIER}/Import/Import.txt")  # regenerate outside the timing
                for contender in ("reference", "pipeline"):
                    control.post("/_sandbox/reset-stats")
                    db_path, images = paths[contender]
                    measured = child(contender, db_path, url, images)
                    stats = control.get("/_sandbox/stats").json()
                    requests = sum(
                        v for k, v in stats.items() if ":" not in k and not k.startswith("peak")
                    )
                    got = stored_counts(db_path, images)
                    rows.append(
                        {
                            "phase": phase,
                            "contender": contender,
                            **measured,
                            "requests": requests,
                            "stats": {k: v for k, v in stats.items() if ":" not in k},
                            "stored": got,
                            "correct": got == want,
                        }
                    )
                    print(
                        f"{phase} {contender}: {measured['wall_s']} s, {measured['peak_rss_mb']} MB, {requests} requests, correct={got == want}",
                        file=sys.stderr,
                    )
            changed = round(args.families * args.changed)
            report = {
                "families": args.families,
                "variants": n_variants,
                "images": len(expected["images"]),
                "changed": changed,
                "resync_lower_bound_requests": 1 + changed,
                "rows": rows,
            }
            for phase in ("first", "resync"):
                ref = next(r for r in rows if r["phase"] == phase and r["contender"] == "reference")
                pipe = next(r for r in rows if r["phase"] == phase and r["contender"] == "pipeline")
                report[f"{phase}_wall_ratio"] = round(pipe["wall_s"] / ref["wall_s"], 2)
                report[f"{phase}_sync_ratio"] = round(pipe["sync_s"] / ref["sync_s"], 2)
            print(
                f"{'phase':8} {'contender':10} {'wall s':>8} {'sync s':>8} {'peak MB':>8} {'requests':>9} correct"
            )
            for r in rows:
                print(
                    f"{r['phase']:8} {r['contender']:10} {r['wall_s']:>8} {r['sync_s']:>8} {r['peak_rss_mb']:>8} {r['requests']:>9} {r['correct']}"
                )
            print(json.dumps(report))
        finally:
            sandbox.kill()
            sandbox.wait()


if __name__ == "__main__":
    main()
