"""How work is split into batch runs: sweep shard counts, chunks and their run keys."""

from __future__ import annotations

import pytest

from sync_pipeline.core import batching


@pytest.mark.parametrize(
    ("users", "shards"),
    [
        (0, 0),
        (1, 1),
        (500, 1),
        (501, 2),
        (6_000, 12),
        (6_001, batching.MAX_SWEEP_RUNS),
        (100_000, batching.MAX_SWEEP_RUNS),
    ],
)
def test_sweep_shards(users: int, shards: int) -> None:
    assert batching.sweep_shards(users) == shards


def test_sweep_shards_rejects_a_negative_count() -> None:
    with pytest.raises(ValueError, match="negative"):
        batching.sweep_shards(-1)


@pytest.mark.parametrize(
    ("n", "size", "sizes"), [(0, 500, []), (3, 500, [3]), (1_050, 500, [500, 500, 50])]
)
def test_chunked_keeps_order_and_every_item(n: int, size: int, sizes: list[int]) -> None:
    items = list(range(n))

    chunks = list(batching.chunked(items, size))

    assert [len(c) for c in chunks] == sizes
    assert [i for c in chunks for i in c] == items


def test_batch_run_key_follows_the_chunk_content() -> None:
    key = batching.batch_run_key("first-sync-batch", [1, 2, 3])

    assert key == batching.batch_run_key("first-sync-batch", (1, 2, 3))
    assert key.startswith("first-sync-batch-")
    assert key != batching.batch_run_key("first-sync-batch", [1, 2, 4])
    assert key != batching.batch_run_key("parked-full", [1, 2, 3])
