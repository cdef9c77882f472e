"""Typed Promidata catalog files: Import.txt lines, CAT.csv rows and product family JSON.

Parsing never guesses: a malformed line, invalid or truncated JSON, a missing required field,
a content hash that does not match the one Import.txt lists, or a language the app does not
know raises `CatalogDataError` with a reason a person can act on; the sync records it on the
family (or line) it belongs to and goes on with the rest.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sync_pipeline.core.errors import PermanentError

#: Languages the catalog stores texts for (ISO 639-1, as Promidata keys ProductDetails).
KNOWN_LANGUAGES = frozenset(
    {"de", "en", "fr", "nl", "it", "es", "pl", "cs", "da", "sv", "fi", "pt", "hu", "sk", "no"}
)
_LINE = re.compile(r"^(?P<url>https?://\S+?)\|(?P<hash>[0-9A-F]{40})$")
_IMAGE_HASH = re.compile(r"/([0-9a-f]{64})\.(?:jpe?g|png|gif|webp)$", re.IGNORECASE)
PRICE_KINDS = {"GeneralBuyingPrice": "buying", "RecommendedSellingPrice": "selling"}


class CatalogDataError(PermanentError):
    """A catalog file is not what Promidata's format promises (retrying will not help)."""

    error_class = "bad_data"


class HashMismatchError(CatalogDataError):
    """The file fetched is not the one Import.txt lists (changed mid-sync or corrupted)."""

    error_class = "hash_mismatch"


def sha1_upper(data: bytes) -> str:
    """The hash Import.txt lists: SHA-1 of the file's bytes, 40 upper-case hex digits."""
    return hashlib.sha1(data).hexdigest().upper()


@dataclass(frozen=True)
class ImportLine:
    """One product family listed in Import.txt."""

    sku: str
    url: str
    hash: str


@dataclass(frozen=True)
class BadLine:
    """An Import.txt line that could not be read, and why."""

    number: int
    text: str
    reason: str


@dataclass(frozen=True)
class ImportFile:
    """A supplier's Import.txt: families by SKU, the CAT.csv line, unreadable lines."""

    supplier: str
    families: dict[str, ImportLine]
    cat_csv: ImportLine | None
    bad_lines: tuple[BadLine, ...]


def parse_import_txt(supplier: str, text: str) -> ImportFile:
    """Read Import.txt; lines of other suppliers or unreadable ones land in `bad_lines`."""
    families: dict[str, ImportLine] = {}
    cat: ImportLine | None = None
    bad: list[BadLine] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        match = _LINE.match(line)
        if match is None:
            reason = (
                "expected '<url>|<40 upper-case hex SHA-1>'"
                if "|" in line
                else "no '|<hash>' after the URL"
            )
            bad.append(BadLine(number, line[:300], reason))
            continue
        url, digest = match.group("url"), match.group("hash")
        parts = url.split("/")
        if url.endswith("/Import/CAT.csv"):
            cat = ImportLine("CAT.csv", url, digest)
            continue
        if not url.endswith(".json") or len(parts) < 2:
            bad.append(BadLine(number, line[:300], "URL is neither a product JSON nor CAT.csv"))
            continue
        if parts[-2] != supplier:
            bad.append(
                BadLine(number, line[:300], f"URL is not under supplier {supplier} ({parts[-2]})")
            )
            continue
        sku = parts[-1].removesuffix(".json")
        if sku in families:
            bad.append(BadLine(number, line[:300], f"family {sku} listed twice"))
            continue
        families[sku] = ImportLine(sku, url, digest)
    return ImportFile(supplier, families, cat, tuple(bad))


@dataclass(frozen=True)
class Category:
    """A CAT.csv row."""

    code: str
    name: str
    parent_code: str | None


def parse_cat_csv(text: str) -> list[Category]:
    """CAT.csv rows ``code;name;parent_code`` (rows without a code are skipped)."""
    out = []
    for row in text.splitlines():
        cells = [c.strip() for c in row.split(";")]
        if not cells or not cells[0]:
            continue
        name = cells[1] if len(cells) > 1 else cells[0]
        parent = cells[2] if len(cells) > 2 and cells[2] else None
        out.append(Category(cells[0], name, parent))
    return out


@dataclass(frozen=True)
class Price:
    """One price tier."""

    region: str
    kind: str  # buying | selling
    quantity: int
    price: float
    currency: str | None
    vat_percent: float | None
    minimum_order_quantity: int | None


@dataclass(frozen=True)
class Text:
    """Texts in one language."""

    language: str
    name: str | None
    description: str | None
    short_description: str | None
    configuration: dict[str, str]


@dataclass(frozen=True)
class ImageRef:
    """An image a family or variant shows; `sha256` comes from its content-addressed URL."""

    url: str
    sha256: str
    role: str  # main | gallery
    position: int


@dataclass(frozen=True)
class Variant:
    """A child product."""

    sku: str
    supplier_sku: str | None
    ean: str | None
    color: str | None
    size: str | None
    texts: tuple[Text, ...]
    prices: tuple[Price, ...]
    images: tuple[ImageRef, ...]
    details: dict[str, Any]


@dataclass(frozen=True)
class Family:
    """A product family: one JSON file of Import.txt."""

    sku: str
    supplier: str
    hash: str
    supplier_sku: str | None
    ean: str | None
    category: str | None
    texts: tuple[Text, ...]
    prices: tuple[Price, ...]
    images: tuple[ImageRef, ...]
    variants: tuple[Variant, ...]
    details: dict[str, Any]
    errors: tuple[Any, ...] = field(default=())
    warnings: tuple[Any, ...] = field(default=())

    def all_images(self) -> dict[str, ImageRef]:
        """Distinct images of the family and its variants, by SHA-256."""
        out: dict[str, ImageRef] = {}
        for ref in (*self.images, *(i for v in self.variants for i in v.images)):
            out.setdefault(ref.sha256, ref)
        return out


def _need(doc: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in doc or doc[key] is None:
        raise CatalogDataError(f"{where}: missing required field {key!r}")
    return doc[key]


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CatalogDataError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _image(raw: Any, role: str, position: int, where: str) -> ImageRef | None:
    if not isinstance(raw, Mapping) or not raw.get("Url"):
        return None
    url = str(raw["Url"])
    match = _IMAGE_HASH.search(url)
    if match is None:
        raise CatalogDataError(f"{where}: image URL is not content-addressed: {url[:200]}")
    return ImageRef(url, match.group(1).lower(), role, position)


def _texts(
    details: Any, where: str, languages: frozenset[str]
) -> tuple[tuple[Text, ...], list[ImageRef]]:
    texts: list[Text] = []
    images: dict[str, ImageRef] = {}
    for lang, raw in _object(details, f"{where}.ProductDetails").items():
        if lang not in languages:
            raise CatalogDataError(
                f"{where}: unknown language {lang!r} in ProductDetails (known: "
                f"{', '.join(sorted(languages))})"
            )
        d = _object(raw, f"{where}.ProductDetails.{lang}")
        config = {
            str(f.get("ConfigurationName")): str(f.get("ConfigurationValue"))
            for f in d.get("ConfigurationFields") or []
            if isinstance(f, Mapping) and f.get("ConfigurationName")
        }
        texts.append(
            Text(
                lang,
                _str(d.get("Name")),
                _str(d.get("Description")),
                _str(d.get("ShortDescription")),
                config,
            )
        )
        main = _image(d.get("Image"), "main", 0, f"{where}.{lang}.Image")
        if main is not None:
            images.setdefault(f"main:{main.sha256}", main)
        for pos, raw_img in enumerate(d.get("MediaGalleryImages") or []):
            ref = _image(raw_img, "gallery", pos, f"{where}.{lang}.MediaGalleryImages")
            if ref is not None:
                images.setdefault(f"gallery:{ref.sha256}", ref)
    return tuple(texts), list(images.values())


def _prices(raw: Any, where: str) -> tuple[Price, ...]:
    if raw is None:
        return ()
    out: dict[tuple[str, str, int], Price] = {}
    for region, r in _object(raw, f"{where}.ProductPriceCountryBased").items():
        r = _object(r, f"{where}.ProductPriceCountryBased.{region}")
        vat = r.get("VatPercentage")
        moq = r.get("MinimumOrderQuantity")
        for field_name, kind in PRICE_KINDS.items():
            for tier in r.get(field_name) or []:
                try:
                    quantity = int(tier["Quantity"])
                    price = float(str(tier["Price"]).replace(",", "."))
                except (KeyError, TypeError, ValueError) as exc:
                    raise CatalogDataError(
                        f"{where}: bad {field_name} tier in {region}: {tier!r}"
                    ) from exc
                out[(region, kind, quantity)] = Price(
                    region,
                    kind,
                    quantity,
                    price,
                    _str(r.get("Valuta")),
                    None if vat is None else float(vat),
                    None if moq is None else int(moq),
                )
    return tuple(out.values())


def _config_value(texts: Iterable[Text], name: str) -> str | None:
    for text in texts:
        if name in text.configuration:
            return text.configuration[name]
    return None


def parse_family(
    data: bytes,
    *,
    supplier: str,
    sku: str,
    listed_hash: str,
    languages: frozenset[str] = KNOWN_LANGUAGES,
) -> Family:
    """Check and read one family JSON; CatalogDataError says what is wrong with it."""
    try:
        doc = json.loads(data)
    except UnicodeDecodeError as exc:
        raise CatalogDataError(f"family {sku}: not UTF-8 ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        truncated = exc.pos >= len(data.rstrip()) - 1
        raise CatalogDataError(
            f"family {sku}: invalid JSON at byte {exc.pos} of {len(data)}: {exc.msg}"
            + (" (the file ends early: truncated)" if truncated else "")
        ) from exc
    actual = sha1_upper(data)
    if actual != listed_hash:
        raise HashMismatchError(
            f"family {sku}: content SHA-1 {actual} does not match {listed_hash} listed in "
            "Import.txt (the file changed during the sync or was corrupted in transit)"
        )
    where = f"family {sku}"
    doc = _object(doc, where)
    if str(_need(doc, "Sku", where)) != sku:
        raise CatalogDataError(f"{where}: JSON Sku {doc['Sku']!r} is not the listed {sku!r}")
    if str(_need(doc, "ANumber", where)) != supplier:
        raise CatalogDataError(f"{where}: ANumber {doc['ANumber']!r} is not supplier {supplier}")
    children = _need(doc, "ChildProducts", where)
    if not isinstance(children, list):
        raise CatalogDataError(f"{where}: ChildProducts is not a list")
    texts, images = _texts(_need(doc, "ProductDetails", where), where, languages)
    variants = []
    seen: set[str] = set()
    for i, raw in enumerate(children):
        child = _object(raw, f"{where}.ChildProducts[{i}]")
        vwhere = f"{where} variant {child.get('Sku', i)}"
        vsku = str(_need(child, "Sku", vwhere))
        if vsku in seen:
            raise CatalogDataError(f"{where}: variant {vsku} appears twice")
        seen.add(vsku)
        vtexts, vimages = _texts(child.get("ProductDetails") or {}, vwhere, languages)
        nl = dict(child.get("NonLanguageDependedProductDetails") or {})
        variants.append(
            Variant(
                sku=vsku,
                supplier_sku=_str(child.get("SupplierSku")),
                ean=_str(child.get("Ean")),
                color=_config_value(vtexts, "Color") or _str(nl.get("SearchColor")),
                size=_config_value(vtexts, "Size"),
                texts=vtexts,
                prices=_prices(child.get("ProductPriceCountryBased"), vwhere),
                images=tuple(vimages),
                details=nl,
            )
        )
    nl = dict(_object(doc.get("NonLanguageDependedProductDetails") or {}, where))
    return Family(
        sku=sku,
        supplier=supplier,
        hash=actual,
        supplier_sku=_str(doc.get("SupplierSku")),
        ean=_str(doc.get("Ean")),
        category=_str(nl.get("Category")),
        texts=texts,
        prices=_prices(doc.get("ProductPriceCountryBased"), where),
        images=tuple(images),
        variants=tuple(variants),
        details={**nl, "ImprintPositions": doc.get("ImprintPositions") or []},
        errors=tuple(doc.get("Errors") or ()),
        warnings=tuple(doc.get("Warnings") or ()),
    )
