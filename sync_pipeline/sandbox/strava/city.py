"""Deterministic street networks of the sandbox cities, shaped like OSM ways (GeoJSON export).

Each city in ``data.CITIES`` gets a slightly perturbed grid of named streets around its centre that
covers the area where generated activities start (centre ±0.04° lat, ±0.06° lng) plus a margin.
East-west and north-south lines meet at intersection nodes shared by both lines; between
intersections a line has a node every ~40-60 m and bends by a few metres.  Each line is cut into
ways of a few blocks, as OSM does, and consecutive ways of a line share their end node.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from sync_pipeline.sandbox.strava.data import _M_PER_DEG, CITIES, City, np_rng_for


def _words(text: str, sep: str | None = None) -> tuple[str, ...]:
    """Split a word list written as one string."""
    return tuple(text.split(sep))


NODE_SPACING_M = 50.0
BLOCK_M = (130.0, 230.0)
MARGIN_M = 2500.0
START_SPREAD_DEG = (0.04, 0.06)
NODE_ID_BASE = 10_000_000
WAY_ID_BASE = 1_000_000
COORD_DECIMALS = 6

_SUFFIXES = {
    "de": ("straße", "weg", "allee", "damm", "ring", "steig"),
    "at": ("gasse", "straße", "weg", "allee", "zeile", "ring"),
    "en": (" Street", " Road", " Lane", " Avenue", " Way", " Grove"),
    "nl": ("straat", "gracht", "laan", "weg", "kade", "dwarsstraat"),
    "pt": ("Rua ", "Avenida ", "Travessa ", "Calçada ", "Beco ", "Escadinhas "),
}
_GERMAN = _words(
    "Linden Birken Eichen Goethe Schiller Mozart Bach Kant Heine Lessing Humboldt Fontane Brahms "
    "Dürer Kepler Leibniz Herder Uhland Körner Rosen Tulpen Ahorn Kastanien Buchen Tannen Garten "
    "Wiesen Berg Mühlen Brunnen Kirch Schul Markt Bahnhof Post Hafen Wald Feld Sonnen Kloster"
)
_BASES = {
    "de": _GERMAN,
    "at": _GERMAN,
    "en": _words(
        "Victoria Albert Queen King Church Station Park Mill High Green Oak Elm Ash Cedar Willow "
        "Chestnut Maple Rose Orchard Meadow Bridge Castle Abbey Market Manor Hill Brook Spring "
        "Windsor York Cambridge Oxford Baker Fleet Ferry Chapel Vicarage Garden Wharf Priory"
    ),
    "nl": _words(
        "Prinsen Keizers Heren Bloem Linden Eglantier Rozen Laurier Vijzel Spiegel Kalver Molen "
        "Kerk Haven Zee Water Brouwers Bakkers Smeden Vissers Vondel Rembrandt Hobbema Ruysdael "
        "Vermeer Tulp Lijnbaans Looiers Passeerders Rapenburger Weesper Amstel Noorder Zuider "
        "Ooster Wester Bilderdijk Potgieter Spaarndammer"
    ),
    "pt": _words(
        "da Prata|do Ouro|Augusta|da Liberdade|de São Bento|do Carmo|da Graça|das Flores|"
        "do Alecrim|da Rosa|dos Remédios|da Madalena|de Santa Marta|do Salitre|de Camões|"
        "Almirante Reis|da República|de Berna|de Roma|do Brasil|da Índia|dos Lusíadas|Garrett|"
        "do Norte|da Misericórdia|de Santo António|dos Fanqueiros|da Conceição|do Poço|da Bica|"
        "das Janelas Verdes|do Século|da Esperança|do Loreto|da Atalaia|dos Douradores|de Alfama|"
        "do Vale|da Escola|das Amoreiras",
        "|",
    ),
}
_STYLE = {
    "Germany": "de",
    "Austria": "at",
    "United Kingdom": "en",
    "Netherlands": "nl",
    "Portugal": "pt",
}
_HIGHWAYS = (("primary", 0.06), ("secondary", 0.10), ("tertiary", 0.14), ("residential", 1.0))


@dataclass(frozen=True, eq=False)
class Way:
    """One OSM-like way: id, name, highway class and its node indices (into the city arrays)."""

    id: int
    name: str
    highway: str
    nodes: np.ndarray


@dataclass(frozen=True, eq=False)
class CityStreets:
    """The street network of one city, with the grid structure kept for route generation.

    ``x``/``y`` are metres east/north of the city centre (equirectangular at the centre latitude),
    computed from the rounded ``lat``/``lng`` that the GeoJSON carries.  Intersection ``(r, c)``
    (row ``r`` from the south, column ``c`` from the west) is node index ``r * cols + c``.
    ``row_lines[r]`` lists the node indices of east-west line ``r`` from west to east,
    ``row_pos[r, c]`` is where intersection ``(r, c)`` sits in it, ``row_cum[r]`` holds metres
    along the line per node and ``row_arc[r, c]`` metres up to the intersection; the ``col_*``
    fields describe the north-south lines (south to north) the same way.
    """

    city: City
    index: int
    node_ids: np.ndarray
    lat: np.ndarray
    lng: np.ndarray
    x: np.ndarray
    y: np.ndarray
    row_lines: tuple[np.ndarray, ...]
    col_lines: tuple[np.ndarray, ...]
    row_pos: np.ndarray
    col_pos: np.ndarray
    row_cum: tuple[np.ndarray, ...]
    col_cum: tuple[np.ndarray, ...]
    row_arc: np.ndarray
    col_arc: np.ndarray
    ways: tuple[Way, ...]

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the intersection grid."""
        return self.row_pos.shape[0], self.row_pos.shape[1]

    def to_latlng(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Convert local metres back to degrees."""
        lat = self.city.lat + y / _M_PER_DEG
        lng = self.city.lng + x / (_M_PER_DEG * math.cos(math.radians(self.city.lat)))
        return lat, lng

    def to_local(self, lat: np.ndarray, lng: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Convert degrees to local metres east/north of the city centre."""
        x = (lng - self.city.lng) * _M_PER_DEG * math.cos(math.radians(self.city.lat))
        y = (lat - self.city.lat) * _M_PER_DEG
        return x, y

    def nearest_intersection(self, lat: float, lng: float) -> tuple[int, int]:
        """Grid position ``(row, col)`` of the intersection closest to a point."""
        rows, cols = self.shape
        x, y = self.to_local(np.array(lat), np.array(lng))
        d2 = (self.x[: rows * cols] - x) ** 2 + (self.y[: rows * cols] - y) ** 2
        r, c = divmod(int(np.argmin(d2)), cols)
        return r, c


def _axis(rng: np.random.Generator, half: float) -> np.ndarray:
    """Positions of grid lines from ``-half`` to ``+half`` with random block lengths."""
    count = int(2 * half / BLOCK_M[0]) + 2
    steps = rng.uniform(*BLOCK_M, count)
    pos = np.concatenate([[0.0], np.cumsum(steps)])
    pos = pos[: int(np.searchsorted(pos, 2 * half)) + 1]
    return pos - pos[-1] / 2


def _line(
    px: np.ndarray, py: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Polyline through intersections with intermediate nodes: (x, y, intersection positions)."""
    dx, dy = np.diff(px), np.diff(py)
    length = np.hypot(dx, dy)
    parts = np.maximum(1, np.rint(length / NODE_SPACING_M)).astype(np.int64)
    pos = np.concatenate([[0], np.cumsum(parts)])
    seg = np.repeat(np.arange(len(parts)), parts)
    t = (np.arange(pos[-1]) - pos[seg]) / parts[seg]
    bend = rng.normal(0.0, 3.0, len(parts))[seg] * np.sin(math.pi * t)
    x = px[seg] + t * dx[seg] - bend * dy[seg] / length[seg]
    y = py[seg] + t * dy[seg] + bend * dx[seg] / length[seg]
    return np.append(x, px[-1]), np.append(y, py[-1]), pos


def _street_names(city: City, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct street names in the local style."""
    style = _STYLE.get(city.country, "en")
    bases, suffixes = _BASES[style], _SUFFIXES[style]
    if style == "pt":
        names = [f"{s}{b}" for b in bases for s in suffixes]
    else:
        names = [f"{b}{s}" for b in bases for s in suffixes]
    order = rng.permutation(len(names))
    picked = [names[i] for i in order[:count]]
    extra = count - len(picked)
    return picked + [f"{names[order[i % len(names)]]} {2 + i // len(names)}" for i in range(extra)]


def _build_city(seed: int, index: int, city: City) -> CityStreets:
    """Generate the network of one city."""
    rng = np_rng_for(seed, "streets", city.name)
    cos_lat = math.cos(math.radians(city.lat))
    half_y = START_SPREAD_DEG[0] * _M_PER_DEG + MARGIN_M
    half_x = START_SPREAD_DEG[1] * _M_PER_DEG * cos_lat + MARGIN_M
    ys, xs = _axis(rng, half_y), _axis(rng, half_x)
    rows, cols = len(ys), len(xs)
    gx = xs[None, :] + rng.normal(0.0, 6.0, (rows, cols))
    gy = ys[:, None] + rng.normal(0.0, 6.0, (rows, cols))
    xs_parts: list[np.ndarray] = [gx.ravel()]
    ys_parts: list[np.ndarray] = [gy.ravel()]
    next_index = rows * cols
    lines: list[tuple[np.ndarray, np.ndarray]] = []
    for horizontal in (True, False):
        for k in range(rows if horizontal else cols):
            px, py = (gx[k], gy[k]) if horizontal else (gx[:, k], gy[:, k])
            lx, ly, pos = _line(px, py, rng)
            crossing = np.arange(cols) + k * cols if horizontal else np.arange(rows) * cols + k
            nodes = np.empty(len(lx), dtype=np.int64)
            nodes[pos] = crossing
            inner = np.ones(len(lx), dtype=bool)
            inner[pos] = False
            nodes[inner] = np.arange(next_index, next_index + int(inner.sum()))
            next_index += int(inner.sum())
            xs_parts.append(lx[inner])
            ys_parts.append(ly[inner])
            lines.append((nodes, pos))
    lat, lng = (
        np.round(city.lat + np.concatenate(ys_parts) / _M_PER_DEG, COORD_DECIMALS),
        np.round(city.lng + np.concatenate(xs_parts) / (_M_PER_DEG * cos_lat), COORD_DECIMALS),
    )
    x = (lng - city.lng) * _M_PER_DEG * cos_lat
    y = (lat - city.lat) * _M_PER_DEG
    cums = []
    for nodes, _ in lines:
        cums.append(
            np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x[nodes]), np.diff(y[nodes])))])
        )
    names = _street_names(city, len(lines), rng)
    ways: list[Way] = []
    way_base = (index + 1) * WAY_ID_BASE
    for (nodes, pos), name in zip(lines, names, strict=True):
        roll = rng.random()
        highway = next(h for h, p in _HIGHWAYS if roll < p)
        blocks = len(pos) - 1
        start = 0
        while start < blocks:
            end = min(blocks, start + int(rng.integers(3, 9)))
            if blocks - end < 2:
                end = blocks
            ways.append(
                Way(way_base + len(ways) + 1, name, highway, nodes[pos[start] : pos[end] + 1])
            )
            start = end
    node_ids = (index + 1) * NODE_ID_BASE + np.arange(len(lat), dtype=np.int64)
    row_pos = np.stack([pos for _, pos in lines[:rows]])
    col_pos = np.stack([pos for _, pos in lines[rows:]], axis=1)
    return CityStreets(
        city=city,
        index=index,
        node_ids=node_ids,
        lat=lat,
        lng=lng,
        x=x,
        y=y,
        row_lines=tuple(nodes for nodes, _ in lines[:rows]),
        col_lines=tuple(nodes for nodes, _ in lines[rows:]),
        row_pos=row_pos,
        col_pos=col_pos,
        row_cum=tuple(cums[:rows]),
        col_cum=tuple(cums[rows:]),
        row_arc=np.stack([cums[r][row_pos[r]] for r in range(rows)]),
        col_arc=np.stack([cums[rows + c][col_pos[:, c]] for c in range(cols)], axis=1),
        ways=tuple(ways),
    )


@lru_cache(maxsize=32)
def city_streets(seed: int, city_name: str) -> CityStreets:
    """The generated network of one city (cached per seed and city)."""
    for index, city in enumerate(CITIES):
        if city.name == city_name:
            return _build_city(seed, index, city)
    raise KeyError(f"unknown sandbox city {city_name!r}")


def build_network(seed: int) -> tuple[CityStreets, ...]:
    """The generated networks of all sandbox cities, in ``CITIES`` order (cached per seed)."""
    return tuple(city_streets(seed, city.name) for city in CITIES)


def streets_geojson(seed: int) -> dict[str, Any]:
    """All cities' streets as a GeoJSON FeatureCollection, one LineString Feature per way."""
    features: list[dict[str, Any]] = []
    for net in build_network(seed):
        node_ids = net.node_ids.tolist()
        lat, lng = net.lat.tolist(), net.lng.tolist()
        for way in net.ways:
            idx = way.nodes.tolist()
            features.append(
                {
                    "type": "Feature",
                    "id": way.id,
                    "geometry": {
                        "type": "LineString",
                        "coordinates": [[lng[i], lat[i]] for i in idx],
                    },
                    "properties": {
                        "id": way.id,
                        "name": way.name,
                        "highway": way.highway,
                        "city": net.city.name,
                        "nodes": [node_ids[i] for i in idx],
                    },
                }
            )
    return {"type": "FeatureCollection", "features": features}


def write_streets_geojson(path: str | Path, seed: int) -> Path:
    """Write ``streets_geojson(seed)`` as compact UTF-8 JSON and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(streets_geojson(seed), ensure_ascii=False, separators=(",", ":"))
    target.write_text(text, encoding="utf-8")
    return target
