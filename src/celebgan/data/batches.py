"""Whole-batch loading from a uint8 image array: one slice per batch, no per-sample Python.

The host moves uint8 batches only; the float conversion and the random flips run on whole
batches after the transfer (FaceDataModule.on_after_batch_transfer), on the GPU when there is one.
"""
import logging
import os
import signal
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, Sampler

from celebgan.errors import check_whole

log = logging.getLogger(__name__)

# JPEG decoding keeps a DCGAN step fed with about this many worker processes; more only take
# cores from the training process.
AUTO_WORKERS = 4


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which a cluster job or a container
    narrows), not all the machine has."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def loader_workers(num_workers: int | str) -> int:
    """data.num_workers as a count of worker processes: `auto` is one per usable core, at most
    AUTO_WORKERS, so a small machine gets no more workers than it has cores."""
    if num_workers == "auto":
        return min(AUTO_WORKERS, usable_cores())
    check_whole("data.num_workers", num_workers, 0, " (0 loads in the training process), or auto")
    return num_workers


class ArrayFaces(Dataset):
    """Batches of (images (B, 3, S, S) uint8, attributes (B, A)) sliced from an (N, S, S, 3) array.

    images: the array in memory, or the path of a .npy that each process memory-maps on first use
        (a worker process receives the path, not a copy of the data).
    gather=False yields the batch's indices in place of its images, for an array that a
        FaceDataModule keeps on the GPU (data.on_device) and slices there.
    __getitem__ takes a list of indices, as a BatchSampler yields them.
    """

    def __init__(self, images: torch.Tensor | str | os.PathLike, attrs: torch.Tensor, *, gather: bool = True):
        self.path = None if isinstance(images, torch.Tensor) else Path(images)
        self._images = images if isinstance(images, torch.Tensor) else None
        self.attrs, self.gather = attrs, gather
        self._len = len(images) if self.path is None else np.load(self.path, mmap_mode="r").shape[0]
        if len(attrs) != self._len:
            raise ValueError(f"{len(attrs)} attribute rows for {self._len} images")

    def __len__(self) -> int:
        return self._len

    @property
    def images(self) -> torch.Tensor:
        """(N, S, S, 3) uint8; memory-mapped when it lives in a file."""
        if self._images is None:
            # "c": copy-on-write, so torch gets a writable view and nothing is ever written back.
            self._images = torch.from_numpy(np.load(self.path, mmap_mode="c"))
        return self._images

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.path is not None:
            state["_images"] = None  # workers map the file themselves
        return state

    def __getitem__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        # Sorted: neighbouring rows read together from the memory map; order within a batch is free.
        index = torch.as_tensor(indices, dtype=torch.long).sort().values
        attrs = self.attrs.index_select(0, index)
        if not self.gather:
            return index, attrs
        return self.images.index_select(0, index).permute(0, 3, 1, 2), attrs  # channels-last strides


class ShuffledBatches(Sampler[list[int]]):
    """Index batches of a fresh permutation each epoch, seeded by (seed, epoch).

    Every DDP rank draws the same permutation, so the DistributedSamplerWrapper that Lightning puts
    around this sampler hands each rank a disjoint share of the batches.
    """

    def __init__(self, num_items: int, batch_size: int, *, seed: int = 0, shuffle: bool = True, drop_last: bool = True):
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.epoch = 0
        self.skip = 0  # batches of the next pass to leave out: those a resumed epoch already trained on

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.num_items, self.batch_size)
        return full + (rest > 0 and not self.drop_last)

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.num_items)
        skip, self.skip = self.skip, 0
        for batch in order[: len(self) * self.batch_size].split(self.batch_size)[skip:]:
            yield batch.tolist()


class EpochLoader(DataLoader):
    """A DataLoader whose iterator asks its sampler for the epoch's order at the first batch, not
    when it is created.

    On resume, Lightning creates the first epoch's iterator before it calls the sampler's
    set_epoch, and a DistributedSampler (DDP) fixes its order when it is iterated: that epoch's
    shards would be those of epoch 0, not of the epoch being trained."""

    def __iter__(self):
        yield from super().__iter__()  # a generator: nothing runs before the first next()


class ResumableLoader(EpochLoader):
    """batch_loader's DataLoader, which Lightning saves and restores with its loops (a loader with
    state_dict / load_state_dict): a run resumed from a checkpoint written mid-epoch (on SIGTERM)
    skips the batches that epoch already trained on, and so continues exactly.

    batches_done: how many batches of the current epoch training has taken. The data module calls
    took_batch() for each batch it hands to the model (FaceDataModule.on_after_batch_transfer): the
    loader's own count of fetches runs ahead by what the loop prefetched. An epoch's iterator starts
    the count at the batches its sampler skips (those a resumed epoch already trained on, else 0).
    A copy Lightning makes of this loader (around a distributed sampler) receives no took_batch()
    and saves 0, as it resumes its epoch from the beginning (load_state_dict)."""

    batches_done: int = 0

    def __iter__(self):
        # At the iterator's first batch, before the sampler spends its skip.
        self.batches_done = self.sampler.skip if isinstance(self.sampler, ShuffledBatches) else 0
        yield from super().__iter__()

    def took_batch(self) -> None:
        self.batches_done += 1

    def state_dict(self) -> dict:
        return {"batches_done": self.batches_done}

    def load_state_dict(self, state_dict: dict) -> None:
        # Lightning calls this only when it resumes an unfinished epoch.
        if isinstance(self.sampler, ShuffledBatches):
            self.sampler.skip = state_dict.get("batches_done", 0)
        else:  # several processes: Lightning rebuilt this loader around a distributed sampler
            log.warning("Resuming in the middle of an epoch with several processes: that epoch's batches "
                        "start again from its beginning (weights, optimizers and counters are exact).")


def worker_init_fn(rank: int = 0) -> Callable[[int], None]:
    """The worker_init_fn of every DataLoader with workers that a training run uses: they ignore
    the stop signals (SIGTERM, SIGINT, SIGHUP, SIGXCPU).

    A scheduler's stop (scancel, Kubernetes) sends SIGTERM to every process of the job, Ctrl-C
    sends SIGINT to every process of the terminal's group, and a closed terminal SIGHUP: a worker that died of it would end the
    training process with a RuntimeError instead of the save that the signal asks for (and leave its
    temporary folder behind). Ignoring them, the workers keep serving batches until the training
    process has saved and shuts them down itself. Setting a worker_init_fn stops Lightning from
    adding its own seeding one (seed_everything(workers=True)), so this calls it in its place.
    """
    return partial(_init_worker, rank=rank, seed=bool(int(os.environ.get("PL_SEED_WORKERS", 0))))


def _init_worker(worker_id: int, *, rank: int, seed: bool) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):
        signal.signal(signum, signal.SIG_IGN)
    if seed:
        pl_worker_init_function(worker_id, rank=rank)


def batch_loader(dataset: ArrayFaces, batch_size: int, *, shuffle: bool = True, drop_last: bool = True,
                 num_workers: int = 0, pin_memory: bool = False, rank: int = 0) -> DataLoader:
    """A DataLoader whose every fetch is one ArrayFaces slice (batch_size=None: no collation)."""
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0))  # set by seed_everything; the same on every rank
    return ResumableLoader(
        dataset, batch_size=None,
        sampler=ShuffledBatches(len(dataset), batch_size, seed=seed, shuffle=shuffle, drop_last=drop_last),
        num_workers=num_workers, persistent_workers=num_workers > 0, pin_memory=pin_memory,
        worker_init_fn=worker_init_fn(rank) if num_workers > 0 else None,
        # Its own generator for the seed each new iterator draws: the global RNG then advances
        # only with training, so a run resumed mid-epoch (a new iterator) draws what it would have.
        generator=torch.Generator().manual_seed(seed),
    )


def to_model_input(images: torch.Tensor, flip: bool) -> torch.Tensor:
    """(B, 3, S, S) uint8 -> float in [-1, 1] (G's tanh range), channels last; with flip, each
    image is mirrored left-right with probability 1/2."""
    if flip:  # on uint8, before the conversion: a quarter of the bytes to move
        mirrored = torch.rand(images.size(0), device=images.device) < 0.5
        images = torch.where(mirrored[:, None, None, None], images.flip(-1), images)
    return images.float().mul_(1 / 127.5).sub_(1.0).contiguous(memory_format=torch.channels_last)


def seeded_subset(n: int, k: int, seed: int) -> torch.Tensor:
    """(min(n, k),) distinct indices into n items, in random order, the same for a seed on every
    machine (drawn on the CPU with its own generator, so the global RNG is left alone)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]
