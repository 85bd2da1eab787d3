"""The batch loader: whole-batch slices, per-epoch permutations, DDP shards, GPU-side conversion."""
import numpy as np
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from celebgan.data.batches import ArrayFaces, ShuffledBatches, batch_loader, to_model_input
from celebgan.data.modules import SyntheticDataModule


def numbered_faces(n: int = 40, size: int = 8) -> ArrayFaces:
    """Image i is filled with the value i, so a batch says which rows it holds."""
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, size, size, 3).contiguous()
    return ArrayFaces(images, torch.arange(n)[:, None])


def test_batches_are_uint8_slices_covering_one_permutation_per_epoch():
    dataset = numbered_faces(40)
    loader = batch_loader(dataset, 16)
    epochs = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == 2 == len(loader)  # 40 // 16: the last partial batch is dropped
        seen = []
        for images, attrs in batches:
            assert images.shape == (16, 3, 8, 8) and images.dtype == torch.uint8
            assert images.is_contiguous(memory_format=torch.channels_last)
            rows = images[:, 0, 0, 0].long()
            assert torch.equal(rows, attrs[:, 0])  # images and attributes stay paired
            seen += rows.tolist()
        assert len(set(seen)) == 32
        epochs.append(seen)
    assert epochs[0] != epochs[1]
    assert list(ShuffledBatches(40, 16, seed=3)) == list(ShuffledBatches(40, 16, seed=3)) != list(ShuffledBatches(40, 16, seed=4))


def test_ddp_ranks_get_disjoint_batches():
    sampler = ShuffledBatches(64, 8, seed=1)
    # What Lightning wraps a custom sampler in under DDP (use_distributed_sampler=True).
    shards = [list(DistributedSamplerWrapper(sampler, num_replicas=2, rank=r, shuffle=True, seed=1)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 4
    rows = [i for shard in shards for batch in shard for i in batch]
    assert sorted(rows) == list(range(64))


def test_memory_mapped_array_in_a_worker_process(tmp_path):
    images = np.arange(24, dtype=np.uint8)[:, None, None, None].repeat(8, 1).repeat(8, 2).repeat(3, 3)
    np.save(tmp_path / "images.npy", images)
    dataset = ArrayFaces(tmp_path / "images.npy", torch.arange(24)[:, None])
    dataset.images  # mapped here; a worker still receives only the path
    assert dataset.__getstate__()["_images"] is None
    rows = []
    for batch, attrs in batch_loader(dataset, 8, num_workers=1):
        assert torch.equal(batch[:, 0, 0, 0].long(), attrs[:, 0])
        rows += attrs[:, 0].tolist()
    assert sorted(rows) == list(range(24))


def test_conversion_range_layout_and_flip_statistics():
    torch.manual_seed(0)
    n = 2000
    # Left half 0, right half 255: a mirrored image starts bright.
    images = torch.zeros(n, 3, 4, 4, dtype=torch.uint8)
    images[..., 2:] = 255
    x = to_model_input(images, flip=True)
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert x.min() == -1.0 and x.max() == 1.0
    flipped = x[:, 0, 0, 0] == 1.0
    assert torch.all(x[flipped] == x[flipped][:1])  # whole images flip, not single rows or channels
    assert 0.45 < flipped.float().mean() < 0.55  # 2000 fair coins: 4.5 standard deviations either side
    assert not to_model_input(images, flip=False)[:, 0, 0, 0].eq(1.0).any()


@pytest.mark.parametrize("on_device", [False, True])
def test_synthetic_faces_take_the_same_path(on_device):
    dm = SyntheticDataModule(num_images=32, img_size=16, batch_size=8, num_workers=0, flip=False, on_device=on_device,
                             attributes="all")  # all 8 labels ride along with the images
    dm.setup("fit")
    raw, attrs = next(iter(dm.train_dataloader()))
    assert raw.shape == ((8,) if on_device else (8, 3, 16, 16))  # indices when the array lives on the device
    images, attrs2 = dm.on_after_batch_transfer((raw, attrs))
    assert images.shape == (8, 3, 16, 16) and attrs2.shape == (8, 8)
    index = raw if on_device else None
    if index is not None:
        expected = dm.train_set.images[index].permute(0, 3, 1, 2).float() / 127.5 - 1
        assert torch.allclose(images, expected, atol=1e-6)
    assert -1.0 <= images.min() and images.max() <= 1.0
