"""Promidata supplier sync in three stages: catalog → product families → images.

Each stage is one partition's sync on the shared runner (`core.sync_runner.run_sync`: lease,
outcome, failure hand-over), with its own sync-state source so a crashed or retried stage
resumes on its own. Work items are rows of the app DB, so resuming needs no cursor:

- catalog: a conditional GET of Import.txt (304: nothing else to do); families are diffed by
  hash (new / changed / unchanged / removed → discontinued) and CAT.csv is read;
- products: every active family whose stored content hash differs from the listed one is
  fetched, checked and written in one transaction (family, variants, prices, texts, image
  links); a family done before a crash is not fetched again;
- images: every image linked by the supplier and not yet stored is downloaded, checked
  (content hash, image bytes, size), stored under its content-addressed key (skipped when the
  store has it) and recorded.

A failing family or image is recorded with its reason (`promidata_failures`) and the rest goes
on; transient failures are retried by the next run, permanent ones (bad data) wait for a new
hash or a redrive. Items in flight are limited per run by thread pools and across runs by
`core.slots.SharedLimit`; progress is written to `promidata_progress` as the stage runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update

from sync_pipeline.core.checkpoints import Checkpoints, Session
from sync_pipeline.core.db import transaction, upsert
from sync_pipeline.core.errors import PermanentError, SyncError, TransientError
from sync_pipeline.core.models import (
    PromidataCategory,
    PromidataFailure,
    PromidataFamily,
    PromidataImage,
    PromidataImageLink,
    PromidataPrice,
    PromidataProgress,
    PromidataSupplier,
    PromidataText,
    PromidataVariant,
    utcnow,
)
from sync_pipeline.core.slots import SharedLimit, holder_name
from sync_pipeline.core.sync_runner import RunContext, SyncOutcome, refuse, run_sync
from sync_pipeline.defs.promidata.models import (
    CatalogDataError,
    Family,
    ImportLine,
    parse_cat_csv,
    parse_family,
    parse_import_txt,
)
from sync_pipeline.defs.promidata.resources import PromidataResource
from sync_pipeline.defs.promidata.storage import ImageRejectedError, PromidataImageStorage

STAGES = ("catalog", "products", "images")
#: Sync-state namespaces of the stages: the catalog is the source's main asset ("promidata",
#: covered by the shared retry, health and dead-letter machinery), the later stages own theirs.
SOURCES = {"catalog": "promidata", "products": "promidata_products", "images": "promidata_images"}
#: The stage that records a failed item, by the item's kind.
STAGE_OF_KIND = {"line": "catalog", "family": "products", "image": "images"}
LEASE_TTL = dt.timedelta(minutes=10)
ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Limits:
    """Concurrency and timeouts (the seed's BULLMQ_CONCURRENCY_* / BULLMQ_JOB_TIMEOUT_*)."""

    families: int = 3
    images: int = 10
    supplier_timeout_seconds: float = 1800.0
    max_attempts: int = 3  # per family or image, then it is a dead letter

    @classmethod
    def of(cls, api: PromidataResource) -> Limits:
        """The limits configured on the resource."""
        return cls(
            api.family_concurrency,
            api.image_concurrency,
            api.supplier_timeout_seconds,
            api.max_attempts,
        )


# --------------------------------------------------------------------------- suppliers
def add_supplier(db_url: str, code: str, name: str | None = None) -> bool:
    """Configure a supplier; False when it already was (its name is updated)."""
    code = code.strip()
    if not code or not code.replace("_", "").isalnum():
        raise ValueError(f"supplier code must be alphanumeric, got {code!r}")
    with transaction(db_url) as s:
        row = s.get(PromidataSupplier, code)
        if row is not None:
            if name:
                row.name = name
            return False
        s.add(PromidataSupplier(code=code, name=name))
        return True


def remove_supplier(db_url: str, code: str) -> bool:
    """Stop syncing a supplier (its stored catalog stays); False when it was not configured."""
    with transaction(db_url) as s:
        row = s.get(PromidataSupplier, code)
        if row is None:
            return False
        s.delete(row)
        return True


def list_suppliers(db_url: str) -> list[PromidataSupplier]:
    """Configured suppliers by code."""
    with transaction(db_url) as s:
        return list(s.scalars(select(PromidataSupplier).order_by(PromidataSupplier.code)))


def _not_configured(code: str) -> str:
    return (
        f"Supplier {code!r} is not configured; add it with `sync-pipeline suppliers add {code}` "
        "or remove the partition."
    )


# --------------------------------------------------------------------------- progress
class Progress:
    """A stage's progress in `promidata_progress`, written at most every `interval` seconds."""

    def __init__(
        self,
        db_url: str,
        supplier: str,
        stage: str,
        run_id: str | None,
        on_change: ProgressFn | None = None,
        interval: float = 0.5,
    ) -> None:
        self.db_url, self.supplier, self.stage, self.run_id = db_url, supplier, stage, run_id
        self.on_change = on_change
        self.interval = interval
        self.step = "starting"
        self.done = 0
        self.total = 0
        self.figures: dict[str, int] = {}
        self._lock = threading.Lock()
        self._written = 0.0
        self._started = False

    def snapshot(self) -> dict[str, Any]:
        """Current figures (step, done/total, percent, counters)."""
        percent = round(100.0 * self.done / self.total, 1) if self.total else 100.0
        return {
            "supplier": self.supplier,
            "stage": self.stage,
            "step": self.step,
            "done": self.done,
            "total": self.total,
            "percent": percent,
            **self.figures,
        }

    def _write(self, state: str, *, error: str | None = None, start: bool = False) -> None:
        now = utcnow()
        with transaction(self.db_url) as s:
            row = s.get(PromidataProgress, (self.supplier, self.stage))
            if row is None:
                row = PromidataProgress(supplier=self.supplier, stage=self.stage, attempts=0)
                s.add(row)
            if start:
                row.started_at, row.finished_at, row.error = now, None, None
                row.attempts = (row.attempts or 0) + 1
            row.run_id, row.state, row.step = self.run_id, state, self.step
            row.done, row.total, row.figures = self.done, self.total, dict(self.figures)
            row.updated_at = now
            if state in ("completed", "failed"):
                row.finished_at, row.error = now, error
        self._written = time.monotonic()
        if self.on_change is not None:
            self.on_change({**self.snapshot(), "state": state})

    def start(self, step: str, total: int) -> None:
        """Begin a step of `total` items."""
        with self._lock:
            self.step, self.done, self.total = step, 0, total
            self._write("active", start=not self._started)
            self._started = True

    def advance(self, n: int = 1, **figures: int) -> None:
        """`n` more items done; add to the named counters."""
        with self._lock:
            self.done += n
            for name, value in figures.items():
                self.figures[name] = self.figures.get(name, 0) + value
            if time.monotonic() - self._written >= self.interval:
                self._write("active")

    def set(self, **figures: int) -> None:
        """Set counters."""
        with self._lock:
            self.figures.update(figures)

    def finish(self, outcome: SyncOutcome) -> None:
        """Record the stage's end from its outcome."""
        with self._lock:
            if outcome.status == "succeeded":
                self.step = "done"
                self._write("completed")
            elif outcome.status == "skipped":
                self._write("waiting", error=outcome.error)
            else:
                self._write("failed", error=outcome.error)


def run_progress(db_url: str, run_id: str) -> list[dict[str, Any]]:
    """The stages a run is at or last wrote (a later run of the stage replaces its row)."""
    with transaction(db_url) as s:
        rows = list(s.scalars(select(PromidataProgress).where(PromidataProgress.run_id == run_id)))
    order = {stage: i for i, stage in enumerate(STAGES)}
    return [
        {
            "partition": row.supplier,
            "stage": row.stage,
            "state": row.state,
            "step": row.step,
            "done": row.done,
            "total": row.total,
            "percent": row.percent if row.total else 100.0,
            "figures": dict(row.figures or {}),
            "attempts": row.attempts,
            "started_at": row.started_at.isoformat() if row.started_at else None,
            "finished_at": row.finished_at.isoformat() if row.finished_at else None,
            "error": row.error,
        }
        for row in sorted(rows, key=lambda r: (r.supplier, order.get(r.stage, 9)))
    ]


def catalogs_ahead(db_url: str) -> dict[str, str]:
    """Suppliers whose last catalog stage left families or images to fetch that no later
    stage has taken up yet: supplier -> the run id of that catalog stage."""
    with transaction(db_url) as s:
        rows = list(s.scalars(select(PromidataProgress)))
    by_supplier: dict[str, dict[str, PromidataProgress]] = {}
    for row in rows:
        by_supplier.setdefault(row.supplier, {})[row.stage] = row
    ahead = {}
    for supplier, stages in by_supplier.items():
        catalog = stages.get("catalog")
        if catalog is None or catalog.state != "completed" or not catalog.run_id:
            continue
        later = [stages[st] for st in ("products", "images") if st in stages]
        if any(st.run_id == catalog.run_id or st.state == "active" for st in later):
            continue  # the same run carries on, or a later stage is at work
        if pending_families(db_url, supplier)[0] or pending_images(db_url, supplier)[0]:
            ahead[supplier] = catalog.run_id
    return ahead


# --------------------------------------------------------------------------- failures
def record_failure(
    db_url: str,
    supplier: str,
    kind: str,
    item: str,
    *,
    version: str | None,
    exc: BaseException,
    run_id: str | None,
    max_attempts: int,
) -> bool:
    """Record one family/image failure; True when it is now a dead letter."""
    error_class = exc.error_class if isinstance(exc, SyncError) else "error"
    reason = str(exc) if isinstance(exc, SyncError) else f"{type(exc).__name__}: {exc}"
    now = utcnow()
    with transaction(db_url) as s:
        row = s.get(PromidataFailure, (supplier, kind, item))
        if row is None or row.version != version:
            if row is not None:
                s.delete(row)
                s.flush()
            row = PromidataFailure(
                supplier=supplier, kind=kind, item=item, version=version, attempts=0
            )
            row.first_failed_at = now
            s.add(row)
        row.attempts = (row.attempts or 0) + 1
        row.error_class, row.reason, row.run_id = error_class, reason[:4000], run_id
        row.last_failed_at = now
        row.dead = isinstance(exc, PermanentError) or row.attempts >= max_attempts
        return row.dead


def clear_failure(s: Any, supplier: str, kind: str, item: str) -> None:
    """The item succeeded: forget its failure (inside the caller's transaction)."""
    s.execute(
        delete(PromidataFailure).where(
            PromidataFailure.supplier == supplier,
            PromidataFailure.kind == kind,
            PromidataFailure.item == item,
        )
    )


def failures(db_url: str, supplier: str | None = None, dead_only: bool = False) -> list[Any]:
    """Recorded family/image failures, newest first."""
    with transaction(db_url) as s:
        q = select(PromidataFailure).order_by(PromidataFailure.last_failed_at.desc())
        if supplier:
            q = q.where(PromidataFailure.supplier == supplier)
        if dead_only:
            q = q.where(PromidataFailure.dead.is_(True))
        return list(s.scalars(q))


def redrive(db_url: str, supplier: str, kind: str | None = None, item: str | None = None) -> int:
    """Make failed items eligible again (the next run retries them); how many.

    A bad Import.txt line is found again only by reading the file in full: redriving one
    forgets the supplier's ETag, so its next catalog stage reads Import.txt unconditionally.
    """
    matches = [PromidataFailure.supplier == supplier]
    if kind:
        matches.append(PromidataFailure.kind == kind)
    if item:
        matches.append(PromidataFailure.item == item)
    with transaction(db_url) as s:
        if s.scalar(select(func.count()).where(*matches, PromidataFailure.kind == "line")):
            s.execute(
                update(PromidataSupplier)
                .where(PromidataSupplier.code == supplier)
                .values(import_etag=None)
            )
        return int(s.execute(delete(PromidataFailure).where(*matches)).rowcount or 0)  # type: ignore[attr-defined]


def dead_letter_key(supplier: str, kind: str, item: str) -> str:
    """A dead item's key in `sync-pipeline dead-letters`: `SUPPLIER/KIND/ITEM`."""
    return f"{supplier}/{kind}/{item}"


def dead_letter_rows(db_url: str) -> list[dict[str, Any]]:
    """Dead families, images and Import.txt lines as dead-letter rows, newest first: the
    partition rows' fields (`core.health.dead_letter_rows`) plus stage, kind, item and key."""
    return [
        {
            "source": SOURCES["catalog"],
            "partition": f.supplier,
            "stage": STAGE_OF_KIND.get(f.kind, f.kind),
            "kind": f.kind,
            "item": f.item,
            "key": dead_letter_key(f.supplier, f.kind, f.item),
            "error_class": f.error_class,
            "message": (f.reason or "")[:300],
            "attempts": f.attempts,
            "first_failure_at": f.first_failed_at.isoformat() if f.first_failed_at else None,
            "last_failure_at": f.last_failed_at.isoformat() if f.last_failed_at else None,
            "run_id": f.run_id,
        }
        for f in failures(db_url, dead_only=True)
    ]


def redrive_dead_letter(db_url: str, key: str) -> str | None:
    """Redrive one dead item by its key (`dead_letter_key`); the supplier whose next sync
    retries it, or None when no such dead letter exists."""
    supplier, _, rest = key.partition("/")
    kind, _, item = rest.partition("/")
    with transaction(db_url) as s:
        row = s.get(PromidataFailure, (supplier, kind, item))
        dead = row is not None and row.dead
    if not dead or not redrive(db_url, supplier, kind, item):
        return None
    return supplier


def _dead_versions(db_url: str, supplier: str, kind: str) -> dict[str, str | None]:
    with transaction(db_url) as s:
        rows = s.execute(
            select(PromidataFailure.item, PromidataFailure.version).where(
                PromidataFailure.supplier == supplier,
                PromidataFailure.kind == kind,
                PromidataFailure.dead.is_(True),
            )
        ).all()
    return {item: version for item, version in rows}


# --------------------------------------------------------------------------- stage plumbing
@dataclass
class StageRun:
    """What a stage function needs besides its work."""

    db_url: str
    supplier: str
    stage: str
    ctx: RunContext
    on_progress: ProgressFn | None = None


def _run_stage(
    run: StageRun, work: Callable[[Session, SyncOutcome, Progress], None]
) -> SyncOutcome:
    cp = Checkpoints(run.db_url, SOURCES[run.stage], ttl=LEASE_TTL)
    outcome = SyncOutcome(key=run.supplier, mode="incremental")
    with transaction(run.db_url) as s:
        configured = s.get(PromidataSupplier, run.supplier) is not None
    if not configured:
        return refuse(
            cp,
            outcome,
            run.ctx,
            error_class="not_configured",
            message=_not_configured(run.supplier),
            record=False,
        )
    progress = Progress(run.db_url, run.supplier, run.stage, run.ctx.run_id, run.on_progress)
    result = run_sync(
        cp,
        outcome,
        run.ctx,
        lambda session: work(session, outcome, progress),
        lease_ttl=LEASE_TTL,
        full_when_new=False,
    )
    outcome.add(**{k: v for k, v in progress.figures.items() if k not in outcome.figures})
    progress.finish(result)
    return result


# --------------------------------------------------------------------------- catalog
def sync_catalog(
    api: PromidataResource,
    db_url: str,
    supplier: str,
    ctx: RunContext,
    *,
    on_progress: ProgressFn | None = None,
    force: bool = False,
) -> SyncOutcome:
    """Stage 1: read Import.txt (conditionally) and diff the families by hash."""

    def work(session: Session, outcome: SyncOutcome, progress: Progress) -> None:
        progress.start("reading_import_txt", 1)
        with transaction(db_url) as s:
            row = s.get(PromidataSupplier, supplier)
            etag = None if force or row is None else row.import_etag
            categories_hash = None if force or row is None else row.categories_hash
        fetched = api.import_txt(supplier, etag, outcome.stats)
        now = utcnow()
        if fetched.unchanged:
            with transaction(db_url) as s:
                s.execute(
                    update(PromidataSupplier)
                    .where(PromidataSupplier.code == supplier)
                    .values(import_checked_at=now)
                )
                listed = s.scalar(
                    select(func.count()).where(
                        PromidataFamily.supplier == supplier, PromidataFamily.status == "active"
                    )
                )
            outcome.add(import_not_modified=1)
            progress.set(
                families_listed=int(listed or 0),
                families_new=0,
                families_changed=0,
                families_unchanged=int(listed or 0),
                families_removed=0,
            )
            progress.advance()
            return
        assert fetched.text is not None
        parsed = parse_import_txt(supplier, fetched.text)
        progress.step = "diffing_families"
        figures = write_catalog_diff(db_url, supplier, parsed.families, now)
        for bad in parsed.bad_lines:
            record_failure(
                db_url,
                supplier,
                "line",
                f"line {bad.number}",
                version=bad.text,
                exc=CatalogDataError(f"Import.txt line {bad.number}: {bad.reason}: {bad.text}"),
                run_id=ctx.run_id,
                max_attempts=1,
            )
        if parsed.cat_csv is not None and parsed.cat_csv.hash != categories_hash:
            progress.step = "reading_categories"
            body, _ = api.fetch(parsed.cat_csv.url, "CAT.csv", outcome.stats, api.timeout_seconds)
            categories = parse_cat_csv(body.decode("utf-8", "replace"))
            with transaction(db_url) as s:
                upsert(
                    s,
                    PromidataCategory,
                    [
                        {"code": c.code, "name": c.name, "parent_code": c.parent_code}
                        for c in categories
                    ],
                    key=["code"],
                    update=["name", "parent_code"],
                )
            figures["categories"] = len(categories)
        with transaction(db_url) as s:
            s.execute(
                update(PromidataSupplier)
                .where(PromidataSupplier.code == supplier)
                .values(
                    import_etag=fetched.etag,
                    import_last_modified=fetched.last_modified,
                    import_checked_at=now,
                    import_changed_at=now,
                    categories_hash=parsed.cat_csv.hash if parsed.cat_csv else None,
                )
            )
        progress.set(bad_lines=len(parsed.bad_lines), **figures)
        progress.advance()

    return _run_stage(StageRun(db_url, supplier, "catalog", ctx, on_progress), work)


def write_catalog_diff(
    db_url: str, supplier: str, listed: dict[str, ImportLine], now: dt.datetime
) -> dict[str, int]:
    """Store the listed hashes; families gone from Import.txt become discontinued."""
    with transaction(db_url) as s:
        stored = {
            sku: (synced, status, listed_hash, url)
            for sku, synced, status, listed_hash, url in s.execute(
                select(
                    PromidataFamily.sku,
                    PromidataFamily.synced_hash,
                    PromidataFamily.status,
                    PromidataFamily.listed_hash,
                    PromidataFamily.url,
                ).where(PromidataFamily.supplier == supplier)
            )
        }
        new = [line for sku, line in listed.items() if sku not in stored]
        changed = unchanged = 0
        updates = []
        for sku, line in listed.items():
            if sku not in stored:
                continue
            synced, status, old_listed, url = stored[sku]
            if synced == line.hash and status == "active":
                unchanged += 1
            else:
                changed += 1
            if (old_listed, url, status) != (line.hash, line.url, "active"):
                updates.append(line)
        removed = [
            sku
            for sku, (_, status, _, _) in stored.items()
            if sku not in listed and status == "active"
        ]
        if new:
            s.add_all(
                PromidataFamily(
                    supplier=supplier,
                    sku=line.sku,
                    url=line.url,
                    listed_hash=line.hash,
                    status="active",
                    first_seen_at=now,
                )
                for line in new
            )
        for line in updates:
            s.execute(
                update(PromidataFamily)
                .where(PromidataFamily.supplier == supplier, PromidataFamily.sku == line.sku)
                .values(url=line.url, listed_hash=line.hash, status="active", discontinued_at=None)
            )
        for start in range(0, len(removed), 500):
            s.execute(
                update(PromidataFamily)
                .where(
                    PromidataFamily.supplier == supplier,
                    PromidataFamily.sku.in_(removed[start : start + 500]),
                )
                .values(status="discontinued", discontinued_at=now)
            )
    return {
        "families_listed": len(listed),
        "families_new": len(new),
        "families_changed": changed,
        "families_unchanged": unchanged,
        "families_removed": len(removed),
    }


# --------------------------------------------------------------------------- products
def pending_families(db_url: str, supplier: str) -> tuple[list[tuple[str, str, str]], int]:
    """(sku, url, listed hash) of families to fetch, and how many are up to date."""
    dead = _dead_versions(db_url, supplier, "family")
    with transaction(db_url) as s:
        rows = s.execute(
            select(PromidataFamily.sku, PromidataFamily.url, PromidataFamily.listed_hash)
            .where(
                PromidataFamily.supplier == supplier,
                PromidataFamily.status == "active",
                or_(
                    PromidataFamily.synced_hash.is_(None),
                    PromidataFamily.synced_hash != PromidataFamily.listed_hash,
                ),
            )
            .order_by(PromidataFamily.sku)
        ).all()
        current = s.scalar(
            select(func.count()).where(
                PromidataFamily.supplier == supplier,
                PromidataFamily.status == "active",
                PromidataFamily.synced_hash == PromidataFamily.listed_hash,
            )
        )
    todo = [(sku, url, h) for sku, url, h in rows if dead.get(sku, "\0") != h]
    return todo, int(current or 0) + (len(rows) - len(todo))


def write_family(db_url: str, family: Family, now: dt.datetime | None = None) -> int:
    """Replace a family's variants, prices, texts and image links in one transaction;
    returns the price rows written."""
    now = now or utcnow()
    variant_skus = [v.sku for v in family.variants]
    with transaction(db_url) as s:
        old = list(
            s.scalars(
                select(PromidataVariant.sku).where(
                    PromidataVariant.supplier == family.supplier,
                    PromidataVariant.family_sku == family.sku,
                )
            )
        )
        owners = sorted({family.sku, *old, *variant_skus})
        s.execute(delete(PromidataPrice).where(PromidataPrice.variant_sku.in_(owners)))
        s.execute(delete(PromidataText).where(PromidataText.sku.in_(owners)))
        s.execute(delete(PromidataImageLink).where(PromidataImageLink.owner_sku.in_(owners)))
        s.execute(
            delete(PromidataVariant).where(
                or_(
                    and_(
                        PromidataVariant.supplier == family.supplier,
                        PromidataVariant.family_sku == family.sku,
                    ),
                    PromidataVariant.sku.in_(variant_skus),
                )
            )
        )
        s.add_all(
            PromidataVariant(
                sku=v.sku,
                supplier=family.supplier,
                family_sku=family.sku,
                supplier_sku=v.supplier_sku,
                ean=v.ean,
                color=v.color,
                size=v.size,
                details=v.details,
                updated_at=now,
            )
            for v in family.variants
        )
        s.flush()
        prices = [
            {
                "variant_sku": owner,
                "region": p.region,
                "kind": p.kind,
                "quantity": p.quantity,
                "price": p.price,
                "currency": p.currency,
                "vat_percent": p.vat_percent,
                "minimum_order_quantity": p.minimum_order_quantity,
            }
            for owner, plist in ((v.sku, v.prices) for v in family.variants)
            for p in plist
        ]
        if prices:
            s.execute(PromidataPrice.__table__.insert(), prices)  # type: ignore[attr-defined]
        texts = [
            {
                "sku": owner,
                "language": t.language,
                "name": t.name,
                "description": t.description,
                "short_description": t.short_description,
                "configuration": t.configuration,
            }
            for owner, tlist in (
                (family.sku, family.texts),
                *((v.sku, v.texts) for v in family.variants),
            )
            for t in tlist
        ]
        if texts:
            s.execute(PromidataText.__table__.insert(), texts)  # type: ignore[attr-defined]
        links = {
            (owner, ref.sha256, ref.role): {
                "owner_sku": owner,
                "image_sha256": ref.sha256,
                "role": ref.role,
                "supplier": family.supplier,
                "position": ref.position,
                "url": ref.url,
            }
            for owner, refs in (
                (family.sku, family.images),
                *((v.sku, v.images) for v in family.variants),
            )
            for ref in refs
        }
        if links:
            s.execute(
                PromidataImageLink.__table__.insert(),  # type: ignore[attr-defined]
                list(links.values()),
            )
        s.execute(
            update(PromidataFamily)
            .where(PromidataFamily.supplier == family.supplier, PromidataFamily.sku == family.sku)
            .values(
                synced_hash=family.hash,
                supplier_sku=family.supplier_sku,
                ean=family.ean,
                category=family.category,
                details=family.details,
                errors=list(family.errors),
                warnings=list(family.warnings),
                last_fetched_at=now,
                last_error=None,
            )
        )
        clear_failure(s, family.supplier, "family", family.sku)
    return len(prices)


def _supplier_deadline(limits: Limits) -> float:
    return time.monotonic() + limits.supplier_timeout_seconds


def sync_products(
    api: PromidataResource,
    db_url: str,
    supplier: str,
    ctx: RunContext,
    *,
    limits: Limits = Limits(),
    on_progress: ProgressFn | None = None,
) -> SyncOutcome:
    """Stage 2: fetch and store every family whose hash changed (3 in flight)."""
    shared = SharedLimit(
        db_url,
        "promidata_families",
        limits.families,
        ttl=dt.timedelta(seconds=api.family_timeout_seconds + 60),
        owner_is_dead=ctx.owner_is_dead,
    )

    def work(session: Session, outcome: SyncOutcome, progress: Progress) -> None:
        todo, current = pending_families(db_url, supplier)
        progress.set(families_changed=0, families_skipped=current, families_failed=0)
        progress.start("fetching_families", len(todo))
        deadline = _supplier_deadline(limits)
        late: list[str] = []

        def one(item: tuple[str, str, str]) -> None:
            sku, url, listed_hash = item
            if time.monotonic() > deadline:
                late.append(sku)
                return
            try:
                with shared.hold(
                    holder_name(ctx.owner, sku), max(1.0, deadline - time.monotonic())
                ):
                    data = api.family_json(url, sku, outcome.stats)
                family = parse_family(data, supplier=supplier, sku=sku, listed_hash=listed_hash)
                prices = write_family(db_url, family)
            except Exception as exc:  # one bad family never stops the others
                dead = record_failure(
                    db_url,
                    supplier,
                    "family",
                    sku,
                    version=listed_hash,
                    exc=exc,
                    run_id=ctx.run_id,
                    max_attempts=limits.max_attempts,
                )
                with transaction(db_url) as s:
                    s.execute(
                        update(PromidataFamily)
                        .where(PromidataFamily.supplier == supplier, PromidataFamily.sku == sku)
                        .values(last_error=str(exc)[:4000])
                    )
                progress.advance(families_failed=1, families_dead=int(dead))
                return
            progress.advance(
                families_changed=1, variants_written=len(family.variants), prices_written=prices
            )

        with ThreadPoolExecutor(limits.families, thread_name_prefix="promidata-family") as ex:
            list(ex.map(one, todo))
        if late:
            raise TransientError(
                f"supplier {supplier}: {len(late)} families left after the supplier timeout of "
                f"{limits.supplier_timeout_seconds:.0f} s; the next run continues with them"
            )

    return _run_stage(StageRun(db_url, supplier, "products", ctx, on_progress), work)


# --------------------------------------------------------------------------- images
def pending_images(db_url: str, supplier: str) -> tuple[list[tuple[str, str]], int, int]:
    """(sha256, url) of the supplier's images not stored yet; links and distinct images."""
    dead = _dead_versions(db_url, supplier, "image")
    with transaction(db_url) as s:
        rows = s.execute(
            select(PromidataImageLink.image_sha256, func.min(PromidataImageLink.url))
            .outerjoin(PromidataImage, PromidataImage.sha256 == PromidataImageLink.image_sha256)
            .where(PromidataImageLink.supplier == supplier, PromidataImage.sha256.is_(None))
            .group_by(PromidataImageLink.image_sha256)
            .order_by(PromidataImageLink.image_sha256)
        ).all()
        links = s.scalar(select(func.count()).where(PromidataImageLink.supplier == supplier))
        distinct = s.scalar(
            select(func.count(func.distinct(PromidataImageLink.image_sha256))).where(
                PromidataImageLink.supplier == supplier
            )
        )
    todo = [(sha, url) for sha, url in rows if sha not in dead]
    return todo, int(links or 0), int(distinct or 0)


def store_image(
    api: PromidataResource,
    storage: PromidataImageStorage,
    db_url: str,
    sha256: str,
    url: str,
    stats: Any,
) -> bool:
    """Download, check and store one image unless the store has it; True when uploaded."""
    store = storage.store()
    key = storage.key(sha256)
    found = store.exists(key)
    uploaded = False
    size, content_type = 0, ""
    if found:
        content_type = "image/png" if url.lower().endswith(".png") else "image/jpeg"
    else:
        data, _ = api.image(url, stats)
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ImageRejectedError(
                f"image content SHA-256 {actual} does not match its content-addressed URL "
                f"{url.rsplit('/', 1)[-1]} ({len(data)} bytes)"
            )
        content_type = storage.check(data)
        size = len(data)
        uploaded = store.put(key, data, content_type)
    with transaction(db_url) as s:
        upsert(
            s,
            PromidataImage,
            [
                {
                    "sha256": sha256,
                    "size": size,
                    "content_type": content_type,
                    "storage_key": key,
                    "source_url": url,
                    "stored_at": utcnow(),
                }
            ],
            key=["sha256"],
            update=["storage_key"],
        )
        s.execute(
            delete(PromidataFailure).where(
                PromidataFailure.kind == "image", PromidataFailure.item == sha256
            )
        )
    return uploaded


def sync_images(
    api: PromidataResource,
    storage: PromidataImageStorage,
    db_url: str,
    supplier: str,
    ctx: RunContext,
    *,
    limits: Limits = Limits(),
    on_progress: ProgressFn | None = None,
) -> SyncOutcome:
    """Stage 3: store the supplier's images not stored yet (10 in flight), deduplicated."""
    shared = SharedLimit(
        db_url,
        "promidata_images",
        limits.images,
        ttl=dt.timedelta(seconds=api.image_timeout_seconds + 60),
        owner_is_dead=ctx.owner_is_dead,
    )

    def work(session: Session, outcome: SyncOutcome, progress: Progress) -> None:
        todo, links, distinct = pending_images(db_url, supplier)
        progress.set(
            image_links=links,
            images_distinct=distinct,
            images_uploaded=0,
            images_deduplicated=distinct - len(todo),
            images_failed=0,
        )
        progress.start("storing_images", len(todo))
        deadline = _supplier_deadline(limits)
        late: list[str] = []

        def one(item: tuple[str, str]) -> None:
            sha, url = item
            if time.monotonic() > deadline:
                late.append(sha)
                return
            try:
                with shared.hold(
                    holder_name(ctx.owner, sha[:16]), max(1.0, deadline - time.monotonic())
                ):
                    uploaded = store_image(api, storage, db_url, sha, url, outcome.stats)
            except Exception as exc:
                dead = record_failure(
                    db_url,
                    supplier,
                    "image",
                    sha,
                    version=url,
                    exc=exc,
                    run_id=ctx.run_id,
                    max_attempts=limits.max_attempts,
                )
                progress.advance(images_failed=1, images_dead=int(dead))
                return
            progress.advance(images_uploaded=int(uploaded), images_deduplicated=int(not uploaded))

        with ThreadPoolExecutor(limits.images, thread_name_prefix="promidata-image") as ex:
            list(ex.map(one, todo))
        if late:
            raise TransientError(
                f"supplier {supplier}: {len(late)} images left after the supplier timeout; "
                "the next run continues with them"
            )

    return _run_stage(StageRun(db_url, supplier, "images", ctx, on_progress), work)


# --------------------------------------------------------------------------- direct mode
def sync_supplier_direct(
    api: PromidataResource,
    storage: PromidataImageStorage,
    db_url: str,
    supplier: str,
    ctx: RunContext,
    *,
    limits: Limits = Limits(),
    on_progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """All three stages in this process; the seed's direct result."""
    started = time.monotonic()
    outcomes = [sync_catalog(api, db_url, supplier, ctx, on_progress=on_progress)]
    if outcomes[0].status == "succeeded":
        outcomes.append(
            sync_products(api, db_url, supplier, ctx, limits=limits, on_progress=on_progress)
        )
        outcomes.append(
            sync_images(api, storage, db_url, supplier, ctx, limits=limits, on_progress=on_progress)
        )
    figures: dict[str, Any] = {}
    for o in outcomes:
        figures.update(o.figures)
    return {
        "supplier": supplier,
        "status": "succeeded" if all(o.status == "succeeded" for o in outcomes) else "failed",
        "productsProcessed": int(figures.get("families_changed", 0)),
        "errors": int(figures.get("families_failed", 0)) + int(figures.get("images_failed", 0)),
        "skipped": int(figures.get("families_skipped", 0)),
        "imagesUploaded": int(figures.get("images_uploaded", 0)),
        "duration": f"{time.monotonic() - started:.2f}s",
        "stageErrors": [o.error for o in outcomes if o.error],
    }
