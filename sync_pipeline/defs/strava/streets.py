"""Street matching: which street nodes a GPS stream passed, and per-street progress.

A street network is a set of OSM-like ways (``street_id``, ``name``, ordered node ids) over nodes
with coordinates, read from a GeoJSON FeatureCollection of LineStrings whose properties carry
``id``, ``name`` and ``nodes``.  A node counts as *hit* by a stream when it lies within
``radius_m`` of the stream's polyline (consecutive GPS points joined by straight segments), so a
sparsely sampled stream still hits the nodes it passed between two fixes.

Distances are measured in earth-centred Cartesian coordinates on a sphere (chord length, which
differs from the great-circle distance by less than a millimetre at these scales).  Unlike a local
equirectangular projection this is exact for a network that spans several cities or countries,
and one ``scipy.spatial.cKDTree`` over all nodes serves every query.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported where used: ~1 s in every process loading the definitions
    import pandas as pd
    from scipy.spatial import cKDTree

EARTH_RADIUS_M = 6_371_008.8
DEFAULT_RADIUS_M = 25.0
# CityStrides-style rule: a street counts as completed once 90% of its nodes were hit; this leaves
# room for a few nodes at a dead end or behind a closed gate without letting half a street count.
COMPLETION_THRESHOLD = 0.9
PROGRESS_COLUMNS = ("street_id", "name", "nodes_total", "nodes_hit", "fraction")
_COORD_TOLERANCE_DEG = 1e-6
_FIRST_K = 8


def to_cartesian(lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
    """(n, 3) earth-centred coordinates in metres of points given in degrees (spherical earth)."""
    phi, lam = np.radians(lat), np.radians(lng)
    cos_phi = np.cos(phi)
    return EARTH_RADIUS_M * np.stack(
        [cos_phi * np.cos(lam), cos_phi * np.sin(lam), np.sin(phi)], axis=-1
    )


def densify(points: np.ndarray, step_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Samples at most ``step_m`` apart along a polyline of (n, 3) points, and each one's segment.

    Segment ``j`` joins ``points[j]`` and ``points[j + 1]``; it contributes its start point and
    evenly spaced interior points, and the last point closes the final segment.  A single point
    yields itself on segment 0.
    """
    if step_m <= 0:
        raise ValueError("step_m must be positive")
    count = len(points)
    if count <= 1:
        return points.copy(), np.zeros(count, dtype=np.int64)
    delta = np.diff(points, axis=0)
    length = np.linalg.norm(delta, axis=1)
    parts = np.maximum(1, np.ceil(length / step_m)).astype(np.int64)
    seg = np.repeat(np.arange(count - 1), parts)
    starts = np.cumsum(parts) - parts
    t = (np.arange(int(parts.sum())) - starts[seg]) / parts[seg]
    samples = points[seg] + t[:, None] * delta[seg]
    return (
        np.concatenate([samples, points[-1:]]),
        np.concatenate([seg, [count - 2]]),
    )


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise distance from points ``p`` to segments ``a``-``b`` (all (m, 3))."""
    ab = b - a
    denom = np.einsum("ij,ij->i", ab, ab)
    t = np.einsum("ij,ij->i", p - a, ab) / np.where(denom > 0, denom, 1.0)
    closest = a + np.clip(t, 0.0, 1.0)[:, None] * ab
    return np.linalg.norm(p - closest, axis=1)


@dataclass(frozen=True, eq=False)
class StreetNetwork:
    """Nodes (sorted ids, coordinates, k-d tree) and streets (ids, names, node membership).

    ``member_street[k]``/``member_node[k]`` list each distinct (street, node) pair as indices into
    ``street_ids`` and ``node_ids``; ``nodes_total[i]`` counts the distinct nodes of street ``i``.
    """

    node_ids: np.ndarray
    lat: np.ndarray
    lng: np.ndarray
    xyz: np.ndarray
    street_ids: np.ndarray
    street_names: np.ndarray
    member_street: np.ndarray
    member_node: np.ndarray
    nodes_total: np.ndarray
    tree: cKDTree

    @classmethod
    def from_ways(
        cls,
        street_ids: Sequence[int] | np.ndarray,
        street_names: Sequence[str] | np.ndarray,
        way_node_ids: Sequence[np.ndarray],
        way_lat: Sequence[np.ndarray],
        way_lng: Sequence[np.ndarray],
    ) -> StreetNetwork:
        """Build from per-way arrays of node ids and coordinates (shared nodes repeat per way)."""
        ids = np.asarray(street_ids, dtype=np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("street ids are not unique")
        if not len(ids) == len(street_names) == len(way_node_ids) == len(way_lat) == len(way_lng):
            raise ValueError("one name, node list and coordinate list is needed per street")
        sizes = np.array([len(nodes) for nodes in way_node_ids], dtype=np.int64)
        if any(len(a) != n or len(b) != n for a, b, n in zip(way_lat, way_lng, sizes, strict=True)):
            raise ValueError("each way needs one coordinate per node")
        empty = np.array([], dtype=np.float64)
        all_ids = np.concatenate([np.array([], dtype=np.int64), *way_node_ids]).astype(np.int64)
        all_lat = np.concatenate([empty, *way_lat]).astype(np.float64)
        all_lng = np.concatenate([empty, *way_lng]).astype(np.float64)
        node_ids, first, inverse = np.unique(all_ids, return_index=True, return_inverse=True)
        lat, lng = all_lat[first], all_lng[first]
        if len(all_ids) and (
            np.abs(all_lat - lat[inverse]).max() > _COORD_TOLERANCE_DEG
            or np.abs(all_lng - lng[inverse]).max() > _COORD_TOLERANCE_DEG
        ):
            raise ValueError("a node id appears with different coordinates")
        street_of = np.repeat(np.arange(len(ids), dtype=np.int64), sizes)
        pairs = np.unique(street_of * max(len(node_ids), 1) + inverse.ravel())
        member_street, member_node = np.divmod(pairs, max(len(node_ids), 1))
        xyz = to_cartesian(lat, lng).reshape(-1, 3)
        return cls(
            node_ids=node_ids,
            lat=lat,
            lng=lng,
            xyz=xyz,
            street_ids=ids,
            street_names=np.asarray(street_names, dtype=object),
            member_street=member_street,
            member_node=member_node,
            nodes_total=np.bincount(member_street, minlength=len(ids)),
            tree=_kdtree(xyz),
        )

    @classmethod
    def from_geojson(cls, path: str | Path) -> StreetNetwork:
        """Read a FeatureCollection of LineString ways with id, name and nodes properties."""
        doc: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
        if doc.get("type") != "FeatureCollection":
            raise ValueError(f"{path}: not a GeoJSON FeatureCollection")
        street_ids: list[int] = []
        names: list[str] = []
        node_lists: list[np.ndarray] = []
        lats: list[np.ndarray] = []
        lngs: list[np.ndarray] = []
        for feature in doc.get("features", []):
            geometry = feature.get("geometry") or {}
            props = feature.get("properties") or {}
            if geometry.get("type") != "LineString":
                raise ValueError(f"{path}: feature {props.get('id')} is not a LineString")
            coords = np.asarray(geometry["coordinates"], dtype=np.float64).reshape(-1, 2)
            nodes = np.asarray(props["nodes"], dtype=np.int64)
            if len(nodes) != len(coords):
                raise ValueError(
                    f"{path}: way {props.get('id')} has {len(nodes)} node ids "
                    f"for {len(coords)} coordinates"
                )
            street_ids.append(int(props.get("id", feature.get("id"))))
            names.append(str(props.get("name") or ""))
            node_lists.append(nodes)
            lngs.append(coords[:, 0])
            lats.append(coords[:, 1])
        return cls.from_ways(np.array(street_ids, dtype=np.int64), names, node_lists, lats, lngs)

    def match(self, latlng: np.ndarray, radius_m: float = DEFAULT_RADIUS_M) -> np.ndarray:
        """Sorted unique ids of the nodes within ``radius_m`` of the stream's polyline."""
        if radius_m <= 0:
            raise ValueError("radius_m must be positive")
        points = np.asarray(latlng, dtype=np.float64).reshape(-1, 2)
        points = points[np.isfinite(points).all(axis=1)]
        if len(points) == 0 or len(self.node_ids) == 0:
            return np.array([], dtype=np.int64)
        path = to_cartesian(points[:, 0], points[:, 1])
        # Every point of a segment is within radius/2 of a sample, so a node within the radius
        # of the segment is within sqrt(r^2 + (r/2)^2) of some sample of that segment or of the
        # next segment's first sample (the shared vertex).
        samples, seg = densify(path, radius_m)
        sample, node = self._near(samples, radius_m * np.sqrt(1.25))
        if len(node) == 0:
            return np.array([], dtype=np.int64)
        size = len(self.node_ids)
        owner, node = np.divmod(np.unique(seg[sample] * size + node), size)
        seg_a, seg_b = (path[:-1], path[1:]) if len(path) > 1 else (path, path)
        prev = np.maximum(owner - 1, 0)
        p = self.xyz[node]
        dist = np.minimum(
            _segment_distance(p, seg_a[owner], seg_b[owner]),
            _segment_distance(p, seg_a[prev], seg_b[prev]),
        )
        return self.node_ids[np.unique(node[dist <= radius_m])]

    def _near(self, points: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
        """All (point index, node index) pairs closer than ``reach``, via k-nearest queries.

        ``cKDTree.query`` with a distance bound returns fixed-width arrays (no Python lists);
        rows whose k-th neighbour is still within reach are asked again with a larger k.
        """
        size = len(self.node_ids)
        rows = np.arange(len(points))
        k = min(_FIRST_K, size)
        found_rows: list[np.ndarray] = []
        found_nodes: list[np.ndarray] = []
        while len(rows):
            dist, idx = self.tree.query(points[rows], k=k, distance_upper_bound=reach)
            dist, idx = dist.reshape(len(rows), k), idx.reshape(len(rows), k)
            full = np.isfinite(dist[:, -1]) if k < size else np.zeros(len(rows), dtype=bool)
            keep = np.isfinite(dist) & ~full[:, None]
            found_rows.append(np.broadcast_to(rows[:, None], keep.shape)[keep])
            found_nodes.append(idx[keep].astype(np.int64))
            rows, k = rows[full], min(size, k * 4)
        return np.concatenate(found_rows), np.concatenate(found_nodes)

    def progress(self, hit_node_ids: np.ndarray) -> pd.DataFrame:
        """Per-street counts of hit nodes, for streets with at least one hit, by street id."""
        hits = np.asarray(hit_node_ids, dtype=np.int64).ravel()
        mask = np.zeros(len(self.node_ids), dtype=bool)
        if len(hits) and len(self.node_ids):
            pos = np.minimum(np.searchsorted(self.node_ids, hits), len(self.node_ids) - 1)
            mask[pos[self.node_ids[pos] == hits]] = True
        nodes_hit = np.bincount(
            self.member_street, weights=mask[self.member_node], minlength=len(self.street_ids)
        ).astype(np.int64)
        touched = np.flatnonzero(nodes_hit)
        touched = touched[np.argsort(self.street_ids[touched], kind="stable")]
        import pandas as pd

        return pd.DataFrame(
            {
                "street_id": self.street_ids[touched],
                "name": self.street_names[touched].astype(str),
                "nodes_total": self.nodes_total[touched],
                "nodes_hit": nodes_hit[touched],
                "fraction": nodes_hit[touched] / self.nodes_total[touched],
            },
            columns=list(PROGRESS_COLUMNS),
        )


def _kdtree(xyz: np.ndarray) -> cKDTree:
    from scipy.spatial import cKDTree

    return cKDTree(xyz)


def completed_streets(
    progress: pd.DataFrame, threshold: float = COMPLETION_THRESHOLD
) -> pd.DataFrame:
    """Rows of a ``progress`` frame whose fraction of hit nodes is at least ``threshold``."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be in (0, 1]")
    return progress[progress["fraction"] >= threshold].reset_index(drop=True)


_cache_lock = threading.Lock()
_cache: dict[Path, tuple[tuple[int, int], StreetNetwork]] = {}


def load_network(path: str | Path) -> StreetNetwork:
    """``StreetNetwork.from_geojson`` cached per file, rebuilt when its mtime or size changes."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        cached = _cache.get(resolved)
    if cached is not None and cached[0] == key:
        return cached[1]
    network = StreetNetwork.from_geojson(resolved)
    with _cache_lock:
        _cache[resolved] = (key, network)
    return network
