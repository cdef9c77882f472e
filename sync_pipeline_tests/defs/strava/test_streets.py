"""Street matching on a hand-made network, and on the sandbox's generated city network."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.spatial import cKDTree

from sync_pipeline.defs.strava import streets
from sync_pipeline.sandbox.strava import city, data

LAT0, LNG0 = 52.0, 13.0
M_PER_DEG = 6_371_008.8 * math.pi / 180  # metres per degree of latitude on the matcher's sphere
SEED = 42
ANCHOR = 1_750_000_000

# Main Street (id 1) runs east along y = 0 with nodes 101..106 at x = 0, 50, ..., 250 m.
# Cross Road (id 2) runs north along x = 100 m: 201 (y=-100), 202 (-50), 103 (0, shared), 203 (50),
# 204 (100).
MAIN = [(101, 0, 0), (102, 50, 0), (103, 100, 0), (104, 150, 0), (105, 200, 0), (106, 250, 0)]
CROSS = [(201, 100, -100), (202, 100, -50), (103, 100, 0), (203, 100, 50), (204, 100, 100)]


def latlng(x_m: float, y_m: float) -> tuple[float, float]:
    """Degrees of a point ``x_m`` east and ``y_m`` north of the origin."""
    return LAT0 + y_m / M_PER_DEG, LNG0 + x_m / (M_PER_DEG * math.cos(math.radians(LAT0)))


def track(*points: tuple[float, float]) -> np.ndarray:
    """(n, 2) lat/lng array from points in local metres."""
    return np.array([latlng(x, y) for x, y in points]).reshape(-1, 2)


def feature(way_id: int, name: str, nodes: Sequence[tuple[int, float, float]]) -> dict[str, Any]:
    """A GeoJSON LineString way from (node id, x m, y m) triples."""
    coords = [list(reversed(latlng(x, y))) for _, x, y in nodes]
    return {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": coords},
        "properties": {
            "id": way_id,
            "name": name,
            "highway": "residential",
            "nodes": [n for n, _, _ in nodes],
        },
    }


def write_geojson(path: Path, features: list[dict[str, Any]]) -> Path:
    """Write a FeatureCollection and return its path."""
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.fixture
def network(tmp_path: Path) -> streets.StreetNetwork:
    """The two-street network, read back from GeoJSON."""
    path = write_geojson(
        tmp_path / "tiny.geojson",
        [feature(1, "Main Street", MAIN), feature(2, "Cross Road", CROSS)],
    )
    return streets.StreetNetwork.from_geojson(path)


def test_network_structure(network: streets.StreetNetwork) -> None:
    assert network.node_ids.tolist() == [101, 102, 103, 104, 105, 106, 201, 202, 203, 204]
    assert network.street_ids.tolist() == [1, 2]
    assert network.nodes_total.tolist() == [6, 5]


@pytest.mark.parametrize(
    ("offset_m", "expected"),
    [
        (10.0, [101, 102, 103, 104, 105, 106]),  # 10 m north of Main Street; 203 is 40 m away
        (40.0, [203]),  # 40 m from Main Street, 10 m from node 203 of Cross Road
        (-10.0, [101, 102, 103, 104, 105, 106]),
        (-45.0, [202]),
        (74.0, [203]),  # 24 m from node 203, 26 m from node 204
    ],
)
def test_track_parallel_to_main_street(
    network: streets.StreetNetwork, offset_m: float, expected: list[int]
) -> None:
    points = track(*[(x, offset_m) for x in np.arange(-20.0, 271.0, 5.0)])
    hits = network.match(points)
    assert hits.tolist() == expected
    assert hits.dtype == np.int64


@pytest.mark.parametrize(
    ("point", "radius_m", "expected"),
    [
        ((0.0, 24.9), 25.0, [101]),
        ((0.0, 25.1), 25.0, []),
        ((0.0, 0.0), 25.0, [101]),
        ((0.0, 10.0), 5.0, []),
        ((0.0, 40.0), 50.0, [101]),  # 102 is sqrt(50² + 40²) = 64 m away
        ((25.0, 0.0), 25.1, [101, 102]),  # midway between two nodes 50 m apart
        ((25.0, 0.0), 24.9, []),
        ((100.0, 0.0), 60.0, [102, 103, 104, 202, 203]),  # the intersection and its neighbours
    ],
)
def test_single_point_radius(
    network: streets.StreetNetwork,
    point: tuple[float, float],
    radius_m: float,
    expected: list[int],
) -> None:
    assert network.match(track(point), radius_m).tolist() == expected


@pytest.mark.parametrize(
    "points",
    [np.empty((0, 2)), [], np.array([[np.nan, np.nan]])],
    ids=["empty-array", "empty-list", "only-nan"],
)
def test_empty_stream(network: streets.StreetNetwork, points: Any) -> None:
    hits = network.match(points)
    assert hits.tolist() == []
    assert network.progress(hits).empty


@pytest.mark.parametrize("radius_m", [0.0, -5.0])
def test_radius_must_be_positive(network: streets.StreetNetwork, radius_m: float) -> None:
    with pytest.raises(ValueError, match="radius"):
        network.match(track((0.0, 0.0)), radius_m)


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        # Two fixes 290 m apart, 10 m north of Main Street: every node between them is passed.
        (((-20.0, 10.0), (270.0, 10.0)), [101, 102, 103, 104, 105, 106]),
        # Two fixes 1.2 km apart passing 20 m from node 203 and 30 m from 204.
        (((-500.0, 70.0), (700.0, 70.0)), [203]),
        # Up Cross Road from far south to far north, 5 m east of it.
        (((105.0, -900.0), (105.0, 900.0)), [103, 201, 202, 203, 204]),
        # A corner: east 10 m north of Main Street, then north 10 m east of Cross Road.
        (((-20.0, 10.0), (110.0, 10.0), (110.0, 200.0)), [101, 102, 103, 203, 204]),
    ],
)
def test_sparse_stream_is_densified(
    network: streets.StreetNetwork,
    points: tuple[tuple[float, float], ...],
    expected: list[int],
) -> None:
    assert network.match(track(*points)).tolist() == expected


@pytest.mark.parametrize(("length_m", "step_m", "samples"), [(100.0, 25.0, 5), (101.0, 25.0, 6)])
def test_densify_spacing(length_m: float, step_m: float, samples: int) -> None:
    path = streets.to_cartesian(*track((0.0, 0.0), (length_m, 0.0)).T)
    dense, seg = streets.densify(path, step_m)
    gaps = np.linalg.norm(np.diff(dense, axis=0), axis=1)
    assert len(dense) == samples
    assert gaps.max() <= step_m
    assert gaps.sum() == pytest.approx(length_m, abs=0.01)
    assert seg.tolist() == [0] * samples


@pytest.mark.parametrize(
    ("hits", "rows"),
    [
        ([101, 102, 103], [(1, "Main Street", 6, 3, 0.5), (2, "Cross Road", 5, 1, 0.2)]),
        ([201, 202, 203, 204], [(2, "Cross Road", 5, 4, 0.8)]),
        ([101, 999], [(1, "Main Street", 6, 1, 1 / 6)]),  # unknown ids are ignored
        ([104, 104, 104], [(1, "Main Street", 6, 1, 1 / 6)]),
        ([], []),
    ],
)
def test_progress(
    network: streets.StreetNetwork, hits: list[int], rows: list[tuple[Any, ...]]
) -> None:
    progress = network.progress(np.array(hits, dtype=np.int64))
    assert list(progress.columns) == list(streets.PROGRESS_COLUMNS)
    got = list(progress.itertuples(index=False, name=None))
    assert [r[:4] for r in got] == [r[:4] for r in rows]
    assert [r[4] for r in got] == pytest.approx([r[4] for r in rows])


@pytest.mark.parametrize(
    ("hits", "threshold", "completed"),
    [
        ([101, 102, 103, 104, 105, 106], streets.COMPLETION_THRESHOLD, [1]),
        ([101, 102, 103, 104, 105], streets.COMPLETION_THRESHOLD, []),  # 5/6 = 0.83 < 0.9
        ([101, 102, 103, 104, 105], 0.8, [1]),
        ([101, 102, 103, 104, 105, 106], 0.2, [1, 2]),  # Cross Road: 1/5 via the shared node
        ([101, 102, 103, 104, 105, 106], 1.0, [1]),
    ],
)
def test_completed_streets(
    network: streets.StreetNetwork, hits: list[int], threshold: float, completed: list[int]
) -> None:
    done = streets.completed_streets(network.progress(np.array(hits)), threshold)
    assert done["street_id"].tolist() == completed


@pytest.mark.parametrize("threshold", [0.0, 1.5])
def test_completed_threshold_validated(network: streets.StreetNetwork, threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        streets.completed_streets(network.progress(np.array([101])), threshold)


def test_closed_way_counts_distinct_nodes() -> None:
    ring = [(1, 0, 0), (2, 50, 0), (3, 50, 50), (1, 0, 0)]
    lat, lng = zip(*(latlng(x, y) for _, x, y in ring), strict=True)
    net = streets.StreetNetwork.from_ways(
        [7], ["Ring"], [np.array([n for n, _, _ in ring])], [np.array(lat)], [np.array(lng)]
    )
    assert net.nodes_total.tolist() == [3]
    assert net.progress(np.array([1])).iloc[0]["fraction"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ([feature(1, "A", MAIN), feature(1, "B", CROSS)], "not unique"),
        ([feature(1, "A", [(1, 0, 0), (2, 50, 0)]), feature(2, "B", [(1, 0, 5)])], "coordinates"),
        (
            [
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [13.0, 52.0]},
                    "properties": {"id": 1, "nodes": [1]},
                }
            ],
            "LineString",
        ),
        (
            [
                {
                    "type": "Feature",
                    "geometry": {"type": "LineString", "coordinates": [[13.0, 52.0]] * 3},
                    "properties": {"id": 1, "name": "A", "nodes": [1, 2]},
                }
            ],
            "node ids",
        ),
    ],
    ids=["duplicate-street", "conflicting-node", "not-linestring", "count-mismatch"],
)
def test_bad_geojson_rejected(tmp_path: Path, features: list[Any], message: str) -> None:
    path = write_geojson(tmp_path / "bad.geojson", features)
    with pytest.raises(ValueError, match=message):
        streets.StreetNetwork.from_geojson(path)


def test_load_network_cached_per_mtime(tmp_path: Path) -> None:
    path = write_geojson(tmp_path / "net.geojson", [feature(1, "Main Street", MAIN)])
    first = streets.load_network(path)
    assert streets.load_network(str(path)) is first
    write_geojson(path, [feature(1, "Main Street", MAIN), feature(2, "Cross Road", CROSS)])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = streets.load_network(path)
    assert second is not first
    assert second.street_ids.tolist() == [1, 2]


# --------------------------------------------------------------- sandbox city network


@pytest.fixture(scope="module")
def sandbox_geojson(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated street network of every sandbox city for seed 42, written once."""
    return city.write_streets_geojson(tmp_path_factory.mktemp("city") / "streets.geojson", SEED)


@pytest.fixture(scope="module")
def sandbox_doc(sandbox_geojson: Path) -> dict[str, Any]:
    """The parsed sandbox GeoJSON."""
    doc: dict[str, Any] = json.loads(sandbox_geojson.read_text(encoding="utf-8"))
    return doc


def test_sandbox_geojson_shape(sandbox_geojson: Path, sandbox_doc: dict[str, Any]) -> None:
    doc = sandbox_doc
    assert sandbox_geojson.stat().st_size < 15_000_000
    node_city: dict[int, str] = {}
    way_ids = set()
    uses: dict[int, int] = {}
    for feat in doc["features"]:
        props = feat["properties"]
        assert set(props) >= {"id", "name", "highway", "nodes"}
        assert len(props["nodes"]) == len(feat["geometry"]["coordinates"]) >= 2
        way_ids.add(props["id"])
        assert re.fullmatch(r"[^\W\d_][\w' -]*", props["name"]), props["name"]
        for node in props["nodes"]:
            assert node_city.setdefault(node, props["city"]) == props["city"]
            uses[node] = uses.get(node, 0) + 1
    assert len(way_ids) == len(doc["features"])
    assert set(node_city.values()) == {c.name for c in data.CITIES}
    assert sum(1 for n in uses.values() if n >= 2) > 1000  # intersections are shared nodes
    lng, lat = np.array(doc["features"][0]["geometry"]["coordinates"]).T
    step = np.hypot(np.diff(lat) * M_PER_DEG, np.diff(lng) * M_PER_DEG * np.cos(np.radians(lat[0])))
    assert ((step > 35) & (step < 65)).all()


def test_city_network_is_deterministic() -> None:
    cached = city.city_streets(SEED, "Berlin")
    fresh = city.city_streets.__wrapped__(SEED, "Berlin")
    other = city.city_streets.__wrapped__(SEED + 1, "Berlin")
    assert fresh is not cached
    np.testing.assert_array_equal(fresh.lat, cached.lat)
    np.testing.assert_array_equal(fresh.lng, cached.lng)
    assert [(w.id, w.name, w.nodes.tolist()) for w in fresh.ways] == [
        (w.id, w.name, w.nodes.tolist()) for w in cached.ways
    ]
    assert len(other.lat) != len(cached.lat) or not np.array_equal(other.lat, cached.lat)


def _street_tree(doc: dict[str, Any], city_name: str) -> cKDTree:
    """k-d tree over the city's street geometry sampled every 2 m (earth-centred metres)."""
    points = []
    for feat in doc["features"]:
        if feat["properties"]["city"] == city_name:
            lng, lat = np.array(feat["geometry"]["coordinates"]).T
            points.append(streets.densify(streets.to_cartesian(lat, lng), 2.0)[0])
    return cKDTree(np.concatenate(points))


def _first_gps_activity(city_name: str) -> tuple[data.ActivitySpec, data.Track]:
    """The first outdoor GPS activity of the first seed-42 athlete living in ``city_name``."""
    for athlete_id in range(1, 200):
        athlete = data.make_athlete(SEED, athlete_id, ANCHOR)
        if athlete.city.name != city_name:
            continue
        starts = data.generate_start_times(SEED, athlete_id, 20, ANCHOR, athlete.city)
        for k, start in enumerate(starts):
            spec = data.make_activity(SEED, athlete, athlete_id * 10_000_000 + k, start)
            track = data.build_track(spec)
            if spec.sport.gps and track is not None and track.lat is not None:
                return spec, track
    raise AssertionError(f"no GPS activity in {city_name}")


@pytest.mark.parametrize("city_name", [c.name for c in data.CITIES])
def test_sandbox_activity_runs_along_streets(
    sandbox_geojson: Path, sandbox_doc: dict[str, Any], city_name: str
) -> None:
    spec, trk = _first_gps_activity(city_name)
    assert trk.lat is not None and trk.lng is not None
    tree = _street_tree(sandbox_doc, city_name)
    raw = streets.to_cartesian(trk.lat, trk.lng)
    dense, _ = streets.densify(raw, 5.0)
    near = tree.query(dense)[0] <= streets.DEFAULT_RADIUS_M
    assert near.mean() >= 0.9
    assert tree.query(raw)[0].max() < streets.DEFAULT_RADIUS_M

    network = streets.load_network(sandbox_geojson)
    hits = network.match(np.column_stack([trk.lat, trk.lng]))
    city_index = [c.name for c in data.CITIES].index(city_name)
    assert (hits // city.NODE_ID_BASE == city_index + 1).all()
    assert len(hits) >= 0.3 * spec.distance / city.NODE_SPACING_M
    start = network.match(np.array([[spec.start_lat, spec.start_lng]]), radius_m=0.5)
    assert len(start) == 1  # the activity starts on a street node
    progress = network.progress(hits)
    assert progress["nodes_hit"].sum() >= len(hits)
    assert (progress["fraction"] <= 1.0).all()
