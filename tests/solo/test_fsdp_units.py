"""Single-process parts of the FSDP2 support (solo/distributed.py): fast, default suite."""

import pytest
import torch

from solo.distributed import check_sharding, shard_seed


@pytest.mark.parametrize("saved,now,match", [
    ({"index": 0, "count": 2}, {"index": 0, "count": 4}, "sharded over 2 rank.*sharded over 4"),
    (None, {"index": 1, "count": 2}, "over 1 rank.*sharded over 2"),
    ({"index": 1, "count": 2}, {"index": 0, "count": 2}, "shard 1 of 2.*holds shard 0"),
])
def test_check_sharding_names_both(saved, now, match):
    with pytest.raises(ValueError, match=match):
        check_sharding(saved, now)


def test_shard_seeds():
    """Shard 0 keeps the seed (a 1-rank run draws what a plain run draws); others differ."""
    assert shard_seed(5, 0) == 5
    seeds = {shard_seed(5, i) for i in range(64)}
    assert len(seeds) == 64 and all(0 <= s < 2**64 for s in seeds)
    torch.Generator().manual_seed(shard_seed(2**64 - 1, 3))
