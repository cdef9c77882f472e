"""In-memory state of the Promidata sandbox: suppliers, product families, images, faults.

Data model (as Promidata publishes it). Per supplier, ``/<SUPPLIER>/Import/Import.txt`` lists
one line per product family, ``https://<host>/<SUPPLIER>/<SKU>.json|<SHA-1 of the JSON>``
(40 upper-case hex), plus the line of ``Import/CAT.csv`` (categories ``code;name;parent``),
which is not a product. A family JSON has the family's ``Sku``, the supplier code in
``ANumber``, its variants in ``ChildProducts`` (own ``Sku``, ``Ean``, details, prices), texts
per language in ``ProductDetails`` (the languages vary by supplier), the category and
dimensions in ``NonLanguageDependedProductDetails`` and price tiers per region in
``ProductPriceCountryBased``. Image URLs are content-addressed: ``/Images/LiveR2/<SUPPLIER>/
<SHA-256 of the bytes>.jpg``.

Generation. Family ``f`` of a supplier has ``2 + f % 5`` variants (4 on average); variant
number ``g`` (counted over the supplier) shows image ``g % images`` of the supplier's image
pool, so pools smaller than the variant count share images between variants and families
(the default 0.75 images per variant gives 30,000 images for 40,000 variants). Everything is
derived from (seed, supplier, family, revision): an edit bumps the revision, so the JSON and
its hash change. JSON is generated on request and only hashes are kept, so a supplier of
10,000 families costs its first Import.txt (a few seconds) and little memory.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from sync_pipeline.sandbox.common import FAULT_KINDS, FaultBook, rng_for
from sync_pipeline.sandbox.promidata import images

Clock = Callable[[], float]

#: Shared fault kinds plus what goes wrong with static catalog files.
PROMIDATA_FAULT_KINDS = FAULT_KINDS | {
    "truncated",  # the JSON body is cut in half
    "invalid_json",  # the JSON body is not JSON
    "hash_mismatch",  # the JSON served differs from the hash Import.txt lists
    "missing",  # 404 for an image or a family
    "not_image",  # an image URL answers with an HTML page
    "oversize",  # an image of several megabytes
}
#: Families whose published data itself is bad (the hash matches the bad bytes).
POISON_KINDS = frozenset({"invalid_json", "missing_field", "unknown_language"})
ALL_LANGUAGES = ("de", "en", "fr", "nl", "it", "es")
REGIONS = ("EURO", "BENELUX", "SWISS")
CATEGORIES = (
    ("BAGS", "Bags", ""),
    ("BAGS/SHOPPING_BAGS", "Shopping bags", "BAGS"),
    ("BAGS/BACKPACKS", "Backpacks", "BAGS"),
    ("DRINKWARE", "Drinkware", ""),
    ("DRINKWARE/MUGS", "Mugs", "DRINKWARE"),
    ("DRINKWARE/BOTTLES", "Bottles", "DRINKWARE"),
    ("WRITING", "Writing", ""),
    ("WRITING/BALLPENS", "Ball pens", "WRITING"),
    ("TEXTILE", "Textile", ""),
    ("TEXTILE/T_SHIRTS", "T-shirts", "TEXTILE"),
)
COLORS = ("black", "white", "red", "blue", "green", "yellow", "navy", "grey", "orange")
SIZES = ("S", "M", "L", "XL", "XXL", "one size")
NOUNS = {
    "de": ("Tasche", "Becher", "Flasche", "Kugelschreiber", "Rucksack", "T-Shirt"),
    "en": ("Bag", "Mug", "Bottle", "Ball pen", "Backpack", "T-shirt"),
    "fr": ("Sac", "Tasse", "Bouteille", "Stylo", "Sac a dos", "T-shirt"),
    "nl": ("Tas", "Mok", "Fles", "Balpen", "Rugzak", "T-shirt"),
    "it": ("Borsa", "Tazza", "Bottiglia", "Penna", "Zaino", "Maglietta"),
    "es": ("Bolsa", "Taza", "Botella", "Boligrafo", "Mochila", "Camiseta"),
}
ADJECTIVES = ("Classic", "Eco", "Premium", "Urban", "Sport", "Recycled", "Compact", "Deluxe")


def sha1_upper(data: bytes) -> str:
    """The hash Import.txt lists for a file: SHA-1, 40 upper-case hex digits."""
    return hashlib.sha1(data).hexdigest().upper()


def ean13(rng: Any) -> str:
    """A random EAN-13 with a correct check digit."""
    digits = [rng.randrange(10) for _ in range(12)]
    check = (10 - sum(d * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10) % 10
    return "".join(map(str, digits)) + str(check)


@dataclass
class PromidataSandboxConfig:
    """Sandbox settings: seed and suppliers (code → number of product families)."""

    seed: int = 42
    suppliers: dict[str, int] = field(default_factory=lambda: {"A23": 6, "A360": 4, "D170": 3})
    images_per_variant: float = 0.75
    clock: Clock | None = None


@dataclass
class Supplier:
    """One supplier's catalog: which families exist, at which revision, and image revisions."""

    code: str
    index: int
    families: int  # families 0..families-1 were generated, minus `removed`
    languages: tuple[str, ...]
    regions: tuple[str, ...]
    image_pool: int
    removed: set[int] = field(default_factory=set)
    revisions: dict[int, int] = field(default_factory=dict)
    image_revisions: dict[int, int] = field(default_factory=dict)
    poison: dict[int, str] = field(default_factory=dict)
    modified_at: float = 0.0
    hashes: dict[int, str] = field(default_factory=dict)  # family → SHA-1 of its JSON
    import_txt: bytes | None = None

    def sku(self, f: int) -> str:
        """The family's SKU."""
        return f"{self.code}-{100000 + f}"

    def live(self) -> list[int]:
        """Family indexes in the catalog now, in order."""
        return [f for f in range(self.families) if f not in self.removed]


def variant_count(f: int) -> int:
    """Variants of family ``f`` (2..6, 4 on average over any 5 consecutive families)."""
    return 2 + f % 5


def first_variant(f: int) -> int:
    """Supplier-wide number of family ``f``'s first variant."""
    return 20 * (f // 5) + sum(2 + k for k in range(f % 5))


class PromidataSandboxState:
    """Suppliers and their catalogs, faults, request counters; thread-safe."""

    def __init__(self, config: PromidataSandboxConfig | None = None) -> None:
        self.config = config or PromidataSandboxConfig()
        self.time: Clock = self.config.clock or time.time
        self.faults = FaultBook(PROMIDATA_FAULT_KINDS)
        self._lock = threading.RLock()
        self._suppliers: dict[str, Supplier] = {}
        self._images: dict[str, tuple[str, int, int]] = {}  # sha256 → (supplier, index, rev)
        self._image_hash: dict[tuple[str, int, int], str] = {}
        self._counts: Counter[str] = Counter()
        self._inflight: Counter[str] = Counter()
        self._peak: Counter[str] = Counter()
        self.base_url = ""
        for code, n in self.config.suppliers.items():
            self.add_supplier(code, n)

    # ----------------------------------------------------------------- suppliers
    def add_supplier(self, code: str, families: int) -> dict[str, Any]:
        """Add a supplier with ``families`` product families."""
        if not code or "/" in code or not code.isalnum():
            raise ValueError(f"supplier code must be alphanumeric, got {code!r}")
        if families < 0:
            raise ValueError("families must be >= 0")
        with self._lock:
            if code in self._suppliers:
                raise ValueError(f"supplier {code} exists")
            index = len(self._suppliers)
            rng = rng_for(self.config.seed, "supplier", code)
            extra = [lang for lang in ALL_LANGUAGES[2:] if rng.random() < 0.5]
            languages = ("de", "en", *extra)
            regions = REGIONS[: 1 + index % len(REGIONS)]
            variants = first_variant(families) if families else 0
            pool = max(1, round(variants * self.config.images_per_variant))
            self._suppliers[code] = Supplier(
                code, index, families, languages, regions, pool, modified_at=self.time()
            )
            return self.describe(code)

    def supplier(self, code: str) -> Supplier:
        """The supplier, or KeyError."""
        with self._lock:
            found = self._suppliers.get(code)
        if found is None:
            raise KeyError(f"unknown supplier {code!r}")
        return found

    def codes(self) -> list[str]:
        """Supplier codes in creation order."""
        with self._lock:
            return list(self._suppliers)

    def describe(self, code: str) -> dict[str, Any]:
        """Summary of one supplier."""
        s = self.supplier(code)
        return {
            "code": s.code,
            "families": len(s.live()),
            "languages": list(s.languages),
            "regions": list(s.regions),
            "image_pool": s.image_pool,
        }

    # ----------------------------------------------------------------- images
    def image_url(self, s: Supplier, index: int) -> str:
        """Content-addressed URL of image ``index`` of the supplier's pool, at its revision."""
        rev = s.image_revisions.get(index, 0)
        key = (s.code, index, rev)
        digest = self._image_hash.get(key)
        if digest is None:
            data, _ = self.image_bytes(s.code, index, rev)
            digest = hashlib.sha256(data).hexdigest()
            self._image_hash[key] = digest
            self._images[digest] = key
        ext = "png" if index % 4 == 3 else "jpg"
        return f"{self.base_url}/Images/LiveR2/{s.code}/{digest}.{ext}"

    def image_bytes(self, code: str, index: int, rev: int) -> tuple[bytes, str]:
        """Bytes and content type of one image (deterministic)."""
        rng = rng_for(self.config.seed, "image", code, index, rev)
        comment = f"promidata-sandbox {code} image {index} rev {rev}"
        if index % 4 == 3:
            rgb = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            return images.png(rgb, comment), "image/png"
        levels = [rng.randrange(256) for _ in range(1 + rng.randrange(4))]
        return images.jpeg(levels, comment), "image/jpeg"

    def image_by_hash(self, digest: str) -> tuple[bytes, str] | None:
        """An image by its content hash, if the sandbox ever published it."""
        with self._lock:
            key = self._images.get(digest)
        if key is None:
            return None
        return self.image_bytes(*key)

    # ----------------------------------------------------------------- families
    def family_index(self, s: Supplier, sku: str) -> int:
        """Index of a live family by SKU, or KeyError."""
        prefix = f"{s.code}-"
        try:
            f = int(sku.removeprefix(prefix)) - 100000
        except ValueError:
            raise KeyError(f"no family {sku!r} at supplier {s.code}") from None
        if not sku.startswith(prefix) or not 0 <= f < s.families or f in s.removed:
            raise KeyError(f"no family {sku!r} at supplier {s.code}")
        return f

    def family_document(self, s: Supplier, f: int) -> dict[str, Any]:
        """The product JSON of family ``f`` as a dict."""
        rev = s.revisions.get(f, 0)
        rng = rng_for(self.config.seed, "family", s.code, f, rev)
        sku = s.sku(f)
        kind = rng.randrange(len(NOUNS["en"]))
        adjective = ADJECTIVES[rng.randrange(len(ADJECTIVES))]
        category = CATEGORIES[rng.randrange(len(CATEGORIES))][0]
        base_price = round(0.5 + rng.random() * 20, 2)
        n = variant_count(f)
        first = first_variant(f)
        variant_images = [self.image_url(s, (first + j) % s.image_pool) for j in range(n)]
        colors = [COLORS[(f + j + rev) % len(COLORS)] for j in range(n)]
        sizes = [SIZES[rng.randrange(len(SIZES))] for _ in range(n)]

        def name(lang: str) -> str:
            return f"{adjective} {NOUNS[lang][kind]} {100000 + f}" + (f" v{rev}" if rev else "")

        def image(url: str) -> dict[str, str]:
            return {"Url": url, "Description": "", "FileName": url.rsplit("/", 1)[-1]}

        def prices(scale: float) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for r, region in enumerate(s.regions):
                factor = scale * (1 + 0.1 * r)
                tiers = [1, 50, 250, 1000][: 2 + (f + r) % 3]
                out[region] = {
                    "Valuta": "CHF" if region == "SWISS" else "EUR",
                    "VatPercentage": 8.1 if region == "SWISS" else 21.0,
                    "MinimumOrderQuantity": tiers[0],
                    "GeneralBuyingPrice": [
                        {"Price": round(base_price * factor * (1 - 0.05 * t), 2), "Quantity": q}
                        for t, q in enumerate(tiers)
                    ],
                    "RecommendedSellingPrice": [
                        {
                            "Price": round(base_price * factor * 1.6 * (1 - 0.05 * t), 2),
                            "Quantity": q,
                        }
                        for t, q in enumerate(tiers)
                    ],
                }
            return out

        children = []
        for j in range(n):
            child_sku = f"{sku}-{j + 1:03d}"
            children.append(
                {
                    "Sku": child_sku,
                    "SupplierSku": f"{100000 + f}-{j + 1:03d}",
                    "Ean": ean13(rng),
                    "ProductDetails": {
                        lang: {
                            "Name": f"{name(lang)} {colors[j]} {sizes[j]}",
                            "Image": image(variant_images[j]),
                            "MediaGalleryImages": [image(variant_images[j])],
                            "ConfigurationFields": [
                                {"ConfigurationName": "Color", "ConfigurationValue": colors[j]},
                                {"ConfigurationName": "Size", "ConfigurationValue": sizes[j]},
                            ],
                        }
                        for lang in s.languages
                    },
                    "NonLanguageDependedProductDetails": {
                        "SearchColor": colors[j],
                        "Weight": round(10 + rng.random() * 500, 1),
                    },
                    "ProductPriceCountryBased": prices(1 + 0.02 * j),
                }
            )
        return {
            "Sku": sku,
            "SupplierSku": str(100000 + f),
            "ANumber": s.code,
            "Ean": ean13(rng),
            "ChildProducts": children,
            "DefaultProducts": [children[0]["Sku"]],
            "ProductDetails": {
                lang: {
                    "Name": name(lang),
                    "Description": f"{name(lang)}: {category.lower()} ({lang}).",
                    "ShortDescription": name(lang),
                    "Image": image(variant_images[0]),
                    "MediaGalleryImages": [image(u) for u in dict.fromkeys(variant_images)],
                    "ConfigurationFields": [
                        {"ConfigurationName": "Material", "ConfigurationValue": "cotton"}
                    ],
                }
                for lang in s.languages
            },
            "NonLanguageDependedProductDetails": {
                "Category": category,
                "Weight": round(10 + rng.random() * 500, 1),
                "Length": round(rng.random() * 40, 1),
                "Width": round(rng.random() * 40, 1),
                "Height": round(rng.random() * 40, 1),
                "Brand": f"Brand {s.code}",
                "CountryOfOrigin": ("CN", "DE", "NL", "PT")[rng.randrange(4)],
                "CustomsTariffNumber": f"{rng.randrange(10**8):08d}",
                "SearchColor": colors[0],
            },
            "ProductPriceCountryBased": prices(1.0),
            "ImprintPositions": [
                {"ImprintPositionName": "Front", "MaxWidth": 80, "MaxHeight": 40},
            ],
            "Errors": [],
            "Warnings": [] if rng.random() < 0.8 else ["Image resolution low"],
        }

    def family_bytes(self, s: Supplier, f: int) -> bytes:
        """The JSON file of family ``f`` as Promidata serves it (poisoned if set so)."""
        poison = s.poison.get(f)
        if poison == "invalid_json":
            return b'{"Sku": "' + s.sku(f).encode() + b'", "ChildProducts": [ {"Sku": '
        doc = self.family_document(s, f)
        if poison == "missing_field":
            del doc["ChildProducts"]
        elif poison == "unknown_language":
            doc["ProductDetails"]["xx"] = doc["ProductDetails"]["en"]
        return json.dumps(doc, ensure_ascii=False).encode()

    def family_hash(self, s: Supplier, f: int) -> str:
        """SHA-1 of the family's JSON (cached until the family or an image changes)."""
        digest = s.hashes.get(f)
        if digest is None:
            digest = sha1_upper(self.family_bytes(s, f))
            s.hashes[f] = digest
        return digest

    def product_json(self, code: str, sku: str) -> bytes:
        """The JSON file of one family (KeyError when it is not published)."""
        with self._lock:
            s = self.supplier(code)
            return self.family_bytes(s, self.family_index(s, sku))

    def cat_csv(self, code: str) -> bytes:
        """The supplier's categories, ``code;name;parent_code`` per line."""
        self.supplier(code)
        return "".join(f"{c};{n};{p}\n" for c, n, p in CATEGORIES).encode()

    def import_txt(self, code: str) -> tuple[bytes, str, str]:
        """Import.txt, its ETag and Last-Modified (cached until the catalog changes)."""
        with self._lock:
            s = self.supplier(code)
            if s.import_txt is None:
                base = f"{self.base_url}/{code}"
                lines = [f"{base}/Import/CAT.csv|{sha1_upper(self.cat_csv(code))}"]
                lines += [f"{base}/{s.sku(f)}.json|{self.family_hash(s, f)}" for f in s.live()]
                s.import_txt = ("\n".join(lines) + "\n").encode()
            body = s.import_txt
            return (
                body,
                f'"{hashlib.md5(body).hexdigest()}"',
                formatdate(s.modified_at, usegmt=True),
            )

    def set_base_url(self, base: str) -> None:
        """The scheme and host URLs are published under (first request wins; caches reset)."""
        base = base.rstrip("/")
        with self._lock:
            if base == self.base_url:
                return
            self.base_url = base
            for s in self._suppliers.values():
                s.hashes.clear()
                s.import_txt = None

    # ----------------------------------------------------------------- control
    def _changed(self, s: Supplier, families: list[int] | None = None) -> None:
        s.modified_at = max(self.time(), s.modified_at + 1)
        s.import_txt = None
        if families is None:
            s.hashes.clear()
        for f in families or []:
            s.hashes.pop(f, None)

    def _pick(self, s: Supplier, skus: list[str] | None, count: int | None) -> list[int]:
        if skus:
            return [self.family_index(s, sku) for sku in skus]
        live = s.live()
        n = len(live) if count is None else count
        if n > len(live):
            raise ValueError(f"supplier {s.code} has only {len(live)} families")
        step = max(1, len(live) // max(n, 1))
        return live[::step][:n]

    def edit_families(
        self, code: str, skus: list[str] | None = None, count: int | None = None
    ) -> list[str]:
        """Change families' content (new name, colours; so a new hash); returns their SKUs."""
        with self._lock:
            s = self.supplier(code)
            picked = self._pick(s, skus, count)
            for f in picked:
                s.revisions[f] = s.revisions.get(f, 0) + 1
            self._changed(s, picked)
            return [s.sku(f) for f in picked]

    def add_families(self, code: str, count: int = 1) -> list[str]:
        """Publish ``count`` new families; returns their SKUs."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            s = self.supplier(code)
            new = list(range(s.families, s.families + count))
            s.families += count
            self._changed(s, new)
            return [s.sku(f) for f in new]

    def remove_families(
        self, code: str, skus: list[str] | None = None, count: int | None = None
    ) -> list[str]:
        """Take families off Import.txt; returns their SKUs."""
        with self._lock:
            s = self.supplier(code)
            picked = self._pick(s, skus, count if skus or count is not None else 1)
            s.removed.update(picked)
            self._changed(s, picked)
            return [s.sku(f) for f in picked]

    def change_image(self, code: str, sku: str, variant: int = 0) -> dict[str, Any]:
        """Replace the image a variant shows (every family showing it gets a new hash)."""
        with self._lock:
            s = self.supplier(code)
            f = self.family_index(s, sku)
            if not 0 <= variant < variant_count(f):
                raise ValueError(f"family {sku} has {variant_count(f)} variants")
            index = (first_variant(f) + variant) % s.image_pool
            old = self.image_url(s, index)
            s.image_revisions[index] = s.image_revisions.get(index, 0) + 1
            self._changed(s)
            return {"old": old, "new": self.image_url(s, index), "image": index}

    def poison_family(self, code: str, sku: str, kind: str | None) -> str:
        """Publish bad data for a family (``kind``), or heal it (None); the hash follows."""
        if kind is not None and kind not in POISON_KINDS:
            raise ValueError(f"unknown poison {kind!r}; known: {sorted(POISON_KINDS)}")
        with self._lock:
            s = self.supplier(code)
            f = self.family_index(s, sku)
            if kind is None:
                s.poison.pop(f, None)
            else:
                s.poison[f] = kind
            self._changed(s, [f])
            return self.family_hash(s, f)

    def expected(self, code: str) -> dict[str, Any]:
        """What a complete sync of the supplier must store (tests compare against it)."""
        with self._lock:
            s = self.supplier(code)
            families: dict[str, Any] = {}
            image_urls: set[str] = set()
            for f in s.live():
                if f in s.poison:
                    continue
                doc = self.family_document(s, f)
                variants = {}
                for child in doc["ChildProducts"]:
                    url = child["ProductDetails"][s.languages[0]]["Image"]["Url"]
                    image_urls.add(url)
                    tiers = sum(
                        len(region["GeneralBuyingPrice"]) + len(region["RecommendedSellingPrice"])
                        for region in child["ProductPriceCountryBased"].values()
                    )
                    variants[child["Sku"]] = {"ean": child["Ean"], "image": url, "prices": tiers}
                for img in doc["ProductDetails"][s.languages[0]]["MediaGalleryImages"]:
                    image_urls.add(img["Url"])
                families[doc["Sku"]] = {
                    "hash": self.family_hash(s, f),
                    "name_en": doc["ProductDetails"]["en"]["Name"],
                    "category": doc["NonLanguageDependedProductDetails"]["Category"],
                    "variants": variants,
                }
            return {
                "families": families,
                "images": sorted(u.rsplit("/", 1)[-1].split(".")[0] for u in image_urls),
                "languages": list(s.languages),
                "removed": [s.sku(f) for f in sorted(s.removed)],
            }

    # ----------------------------------------------------------------- counters
    def count(self, kind: str, supplier: str | None = None) -> None:
        """Count one request (by kind, and by kind and supplier)."""
        with self._lock:
            self._counts[kind] += 1
            if supplier:
                self._counts[f"{kind}:{supplier}"] += 1

    def enter(self, kind: str) -> None:
        """A request of ``kind`` is in flight (the peak is kept as ``peak:<kind>``)."""
        with self._lock:
            self._inflight[kind] += 1
            self._peak[kind] = max(self._peak[kind], self._inflight[kind])

    def in_flight(self, kind: str) -> int:
        """Requests of ``kind`` being answered now."""
        with self._lock:
            return self._inflight[kind]

    def leave(self, kind: str) -> None:
        """A request of ``kind`` finished."""
        with self._lock:
            self._inflight[kind] -= 1

    def stats(self) -> dict[str, Any]:
        """Requests served, by kind (``import``, ``import_304``, ``product``, ``image``...),
        and the most requests of a kind in flight at once (``peak:product``...)."""
        with self._lock:
            return {**self._counts, **{f"peak:{k}": v for k, v in self._peak.items()}}

    def reset_stats(self) -> None:
        """Zero the request counters and peaks."""
        with self._lock:
            self._counts.clear()
            self._peak.clear()
