"""Benchmark street matching: a synthetic ~100,000-node street grid and a 10,000-point GPS track.

Times building the network (node de-duplication plus the k-d tree) and ``StreetNetwork.match``
(median of several repeats) for a densely sampled track (1 fix every ~3 m) and for a sparse one
(1 fix every ~50 m, which exercises densification), then prints a table and one JSON line.

Run: ``.venv/bin/python benchmarks/street_matching.py [--repeats N] [--seed S]``
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from sync_pipeline.defs.strava.streets import StreetNetwork

M_PER_DEG = 6_371_008.8 * math.pi / 180
CENTRE = (52.52, 13.405)
BLOCK_M = 150.0
NODES_PER_BLOCK = 3  # a node every 50 m
LINES = 142  # 142 x 142 grid lines -> 100,252 nodes


Ways = tuple[list[int], list[str], list[np.ndarray], list[np.ndarray], list[np.ndarray]]


def grid_network(lines: int = LINES) -> Ways:
    """Per-way arrays (ids, names, node ids, lats, lngs) of a square grid of streets."""
    per_line = (lines - 1) * NODES_PER_BLOCK + 1
    spacing = BLOCK_M / NODES_PER_BLOCK
    along = np.arange(per_line) * spacing
    cross = np.arange(lines) * BLOCK_M
    cos_lat = math.cos(math.radians(CENTRE[0]))
    ids: list[int] = []
    names: list[str] = []
    nodes: list[np.ndarray] = []
    lats: list[np.ndarray] = []
    lngs: list[np.ndarray] = []
    for k in range(lines):
        # east-west line k: node (k, j) for j along; id k * per_line + j
        ew = k * per_line + np.arange(per_line)
        # north-south line k: intersections reuse east-west ids, others get their own
        j = np.arange(per_line)
        on_row = j % NODES_PER_BLOCK == 0
        ns = np.where(on_row, (j // NODES_PER_BLOCK) * per_line + k * NODES_PER_BLOCK, 0)
        ns[~on_row] = lines * per_line + k * per_line + j[~on_row]
        for way_id, node_ids, x, y in (
            (2 * k + 1, ew, along, np.full(per_line, cross[k])),
            (2 * k + 2, ns, np.full(per_line, cross[k]), along),
        ):
            ids.append(way_id)
            names.append(f"Street {way_id}")
            nodes.append(node_ids.astype(np.int64))
            lats.append(CENTRE[0] + y / M_PER_DEG)
            lngs.append(CENTRE[1] + x / (M_PER_DEG * cos_lat))
    return ids, names, nodes, lats, lngs


def grid_track(points: int, spacing_m: float, seed: int, lines: int = LINES) -> np.ndarray:
    """(points, 2) lat/lng of a random walk along the grid streets with ~3 m GPS noise."""
    rng = np.random.default_rng(seed)
    r, c = lines // 2, lines // 2
    corners = [(r, c)]
    need = points * spacing_m / BLOCK_M + 2
    heading = 0
    while len(corners) < need:
        heading = (heading + int(rng.choice([0, 0, 1, 3]))) % 4
        dr, dc = ((0, 1), (1, 0), (0, -1), (-1, 0))[heading]
        if not (0 <= r + dr < lines and 0 <= c + dc < lines):
            heading = (heading + 2) % 4
            continue
        r, c = r + dr, c + dc
        corners.append((r, c))
    xy = np.array(corners, dtype=np.float64)[:, ::-1] * BLOCK_M
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
    at = np.arange(points) * spacing_m
    x = np.interp(at, arc, xy[:, 0]) + rng.normal(0, 3.0, points)
    y = np.interp(at, arc, xy[:, 1]) + rng.normal(0, 3.0, points)
    cos_lat = math.cos(math.radians(CENTRE[0]))
    return np.stack([CENTRE[0] + y / M_PER_DEG, CENTRE[1] + x / (M_PER_DEG * cos_lat)], axis=1)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time in milliseconds over ``repeats`` calls, and the last result."""
    times: list[float] = []
    result: Any = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def main() -> None:
    """Run the benchmark and print a table and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    ways = grid_network()
    build_ms, network = timed(lambda: StreetNetwork.from_ways(*ways), max(3, args.repeats // 2))
    tree_ms, _ = timed(lambda: cKDTree(network.xyz), args.repeats)
    rows: list[tuple[str, float, str]] = [
        ("network build (incl. tree)", build_ms, f"{len(network.node_ids):,} nodes"),
        ("k-d tree build", tree_ms, f"{len(network.street_ids):,} streets"),
    ]
    result: dict[str, Any] = {
        "nodes": len(network.node_ids),
        "streets": len(network.street_ids),
        "network_build_ms": round(build_ms, 2),
        "tree_build_ms": round(tree_ms, 2),
        "repeats": args.repeats,
    }
    for label, spacing in (("dense", 3.0), ("sparse", 50.0)):
        track = grid_track(10_000, spacing, args.seed)
        match_ms, hits = timed(partial(network.match, track, 25.0), args.repeats)
        progress_ms, progress = timed(partial(network.progress, hits), args.repeats)
        samples = len(track)
        rows.append((f"match, {label} track", match_ms, f"{samples:,} points, {len(hits):,} hits"))
        rows.append((f"progress, {label} track", progress_ms, f"{len(progress):,} streets"))
        result[f"match_{label}_ms"] = round(match_ms, 2)
        result[f"progress_{label}_ms"] = round(progress_ms, 2)
        result[f"hits_{label}"] = len(hits)
        result[f"points_{label}"] = samples
        result[f"track_{label}_km"] = round(spacing * (samples - 1) / 1000, 1)
    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}}  {'median ms':>10}  detail")
    for name, ms, detail in rows:
        print(f"{name:<{width}}  {ms:>10.2f}  {detail}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
