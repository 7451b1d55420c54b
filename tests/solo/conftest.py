import pytest
import torch

# Tiny tensors: one thread avoids OpenMP spin-waits that dominate on a busy 2-core machine.
torch.set_num_threads(1)


@pytest.fixture
def one_rank(tmp_path):
    """A 1-rank gloo process group in this process (FSDP2 needs one), torn down after."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
