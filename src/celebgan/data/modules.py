"""CelebA and the synthetic faces, as LightningDataModules.

Nothing here downloads: CelebA must already be on disk (its layouts and list files: celeba.py),
and `data=synthetic` needs nothing.
"""
import hashlib
import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from lightning import LightningDataModule
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from celebgan.data.batches import (ArrayFaces, EpochLoader, ResumableLoader, batch_loader, loader_workers,
                                   seeded_subset, to_model_input, worker_init_fn)
from celebgan.data.celeba import (check_split, face_transform, find_layout, hash_files, list_images, read_image,
                                  say_large)
from celebgan.devices import has_cuda
from celebgan.errors import UserError, check_whole
from celebgan.io import atomic_write, format_duration
from celebgan.gan.networks import num_stages
from celebgan.gan.labels import LabelTable
from celebgan.data import prepared
from celebgan.data.prepared import build, check_prepared, record_path, source_of
from celebgan.data.synthetic import ATTR_NAMES as SYNTHETIC_ATTR_NAMES
from celebgan.data.synthetic import RENDERER_VERSION, SPLIT_IDS, render_faces

log = logging.getLogger(__name__)


def check_attributes(attributes) -> str | list[str] | None:
    """data.attributes as given: None, "all", or attribute names (one name alone is a list of one)."""
    if attributes is None or attributes == "all":
        return attributes
    names = [attributes] if isinstance(attributes, str) else attributes
    if not isinstance(names, Sequence) or not names or not all(isinstance(n, str) and n for n in names):
        raise UserError(f"data.attributes={attributes!r} must be null (unconditional), all, or a list of "
                        "attribute names, e.g. data.attributes=[Smiling,Eyeglasses].")
    names = list(names)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"data.attributes names {', '.join(repeated)} more than once.")
    return names


def choose_attributes(attributes: str | list[str] | None, available: list[str]) -> list[str]:
    """The names data.attributes chooses from the data's `available` ones, in its order ("all": the
    data's order; None: none), or one UserError listing the available ones."""
    if attributes is None:
        return []
    if attributes == "all":
        if not available:
            raise UserError("data.attributes=all, but this data carries no attributes (CelebA's come from "
                            "list_attr_celeba.txt or .csv next to its images). Set data.attributes=null.")
        return list(available)
    missing = [n for n in attributes if n not in available]
    if missing:
        have = ", ".join(available) if available else "none (no list_attr_celeba file)"
        raise UserError(f"data.attributes: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not among "
                        f"this data's attributes, which are: {have}.")
    return list(attributes)


def dataset_name(data_config) -> str:
    """The data set a data config reads, named by its data module: CelebA or Synthetic."""
    return str(data_config.get("_target_", "")).rsplit(".", 1)[-1].removesuffix("DataModule")


class ImageFiles(Dataset):
    """(image (3, S, S) in [-1, 1], attributes) from image files.

    An unreadable file (corrupt, truncated) is reported once per run and replaced by the next
    readable one, so one bad file never ends an epoch. Images are read upright (their EXIF
    orientation), transparency on white, grayscale, palette and CMYK as RGB, and 16-bit, 32-bit and
    float grayscale scaled to 8 bits (celeba.read_image).
    """

    def __init__(self, files: list[Path], attrs: torch.Tensor | None, transform):
        self.files, self.attrs, self.transform = files, attrs, transform
        # One flag per file in shared memory, which DataLoader workers inherit: whichever worker
        # meets a bad file first reports it, in any epoch, and no other worker does again.
        self._reported = multiprocessing.Array("b", len(files))
        self._said_large = multiprocessing.Value("b", 0)  # celeba.say_large: once for all workers

    @property
    def skipped(self) -> set[str]:
        """The unreadable files met so far, by any worker."""
        return {str(self.files[i]) for i, flag in enumerate(self._reported.get_obj()) if flag}

    def _report_once(self, i: int, err: Exception) -> None:
        with self._reported.get_lock():
            first = not self._reported[i]
            self._reported[i] = 1
        if first:
            log.warning("Skipping unreadable image %s (%s)", self.files[i], err)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        for offset in range(len(self.files)):
            i = (index + offset) % len(self.files)
            path = self.files[i]
            try:
                img, large = read_image(path)  # decodes fully, so a truncated file fails here
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                self._report_once(i, err)
                continue
            if large is not None:
                say_large(path, large, self._said_large)
            attrs = self.attrs[i] if self.attrs is not None else torch.zeros(0, dtype=torch.long)
            return self.transform(img), attrs
        raise UserError(f"None of the {len(self.files)} images could be read (first: {self.files[0]}).")


class TensorFaces(Dataset):
    """(image (3, S, S) in [-1, 1], attributes) from an in-memory uint8 tensor (N, 3, S, S), one
    image at a time: the evaluation path (metrics, real-image grids, the attribute classifier)."""

    def __init__(self, images: torch.Tensor, attrs: torch.Tensor):
        self.images, self.attrs = images, attrs

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index].float().div_(127.5).sub_(1.0), self.attrs[index]


class FaceDataModule(LightningDataModule):
    """Shared loader settings; subclasses say how to build the dataset of one split.

    An ArrayFaces dataset (prepared CelebA, synthetic faces) is read a whole batch at a time as
    uint8; on_after_batch_transfer turns it into the model's float input on the training device.
    on_device=True copies the whole uint8 array to that device once and slices batches there.

    attributes: the attribute columns of the training batches (images, attrs (B, A) integer 0/1): None
        gives none (B, 0), the unconditional GAN's; "all" every one the data has (CelebA's 40, the
        synthetic faces' 8); a list of names those columns in that order. `attr_names` is the chosen
        names once set up, `data_attr_names` all the data has; evaluation datasets (eval_dataset,
        the attribute classifier's) carry all of them.
    """

    attr_names: list[str] = []
    data_attr_names: list[str] = []
    flip: bool = True

    def __init__(self, *, img_size: int = 64, batch_size: int = 128, num_workers: int | str = "auto",
                 pin_memory: bool = True, on_device: bool = False, attributes: str | Sequence[str] | None = None):
        super().__init__()
        num_stages(img_size)  # an unsupported size fails here, before any data is read
        check_whole("data.batch_size", batch_size, 1)
        self.attributes = check_attributes(attributes)
        self.img_size, self.batch_size = img_size, batch_size
        # Resolved here, on the machine that loads: the config keeps `auto`, so it travels with a run.
        self.num_workers = loader_workers(num_workers)
        self.pin_memory, self.on_device = pin_memory, on_device
        self.train_set: Dataset | None = None
        self._device_images: torch.Tensor | None = None
        self._resumable: ResumableLoader | None = None  # the training loader, which counts the batches taken

    def build_dataset(self) -> Dataset:
        raise NotImplementedError

    def chosen_columns(self, attrs: torch.Tensor | None) -> torch.Tensor | None:
        """The data's (N, A_all) attributes -> the chosen (N, A) columns (data.attributes), setting
        attr_names; called by build_dataset once the data's names are known, before its images are read."""
        self.attr_names = choose_attributes(self.attributes, self.data_attr_names)
        if attrs is None:  # no attribute file, and none chosen: ImageFiles yields (0,) per image
            return None
        return attrs[:, [self.data_attr_names.index(name) for name in self.attr_names]]

    def attr_frequencies(self) -> torch.Tensor:
        """(A,) float: each chosen attribute's share of the training split (after setup)."""
        attrs = self.train_set.attrs if self.train_set is not None else None
        if attrs is None or attrs.size(1) == 0:
            return torch.zeros(len(self.attr_names))
        return attrs.float().mean(0)

    def label_table(self) -> LabelTable | None:
        """The training split's distinct rows of the chosen attributes and their counts (after setup);
        None without labels."""
        attrs = self.train_set.attrs if self.train_set is not None else None
        if attrs is None or attrs.size(1) == 0:
            return None
        return LabelTable.from_labels(attrs)

    # The real side of FID/KID: `limit` unflipped images of a split, and a description of exactly
    # what they are computed from, which keys the cache of their features (celebgan.metrics.scores).
    def eval_dataset(self, split: str, limit: int | None = None) -> Dataset:
        raise NotImplementedError

    def fingerprint(self, split: str, limit: int | None = None) -> dict:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:  # idempotent: train() may call it early to validate
            self.train_set = self.build_dataset()
            if len(self.train_set) < self.batch_size:
                raise UserError(f"The dataset has {len(self.train_set)} images, fewer than one batch "
                                f"(data.batch_size={self.batch_size}); lower data.batch_size.")

    def train_dataloader(self) -> DataLoader:
        if isinstance(self.train_set, ArrayFaces):
            # No worker processes: slicing a batch costs less than handing it over from a worker
            # (benchmarks/throughput.py, "prepared loader" rows: about 2.5x more images/s).
            loader = batch_loader(self.train_set, self.batch_size, num_workers=0,
                                  pin_memory=self.pin_memory and has_cuda() and not self.on_device)
            self._resumable = loader
            return loader
        return EpochLoader(
            self.train_set, batch_size=self.batch_size, shuffle=True,
            drop_last=True,  # equal batches keep BatchNorm statistics and the step count regular
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory and has_cuda(),
            worker_init_fn=worker_init_fn(self._rank()) if self.num_workers > 0 else None,
        )

    def _rank(self) -> int:
        return self.trainer.global_rank if self.trainer else 0

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        # Once per batch the loop hands to training_step (a prefetched batch is not transferred yet).
        if self._resumable is not None:
            self._resumable.took_batch()
        images, attrs = batch
        if images.dim() == 1:  # on_device: the batch's indices into the array kept on this device
            images = self.device_images(images.device).index_select(0, images).permute(0, 3, 1, 2)
        if images.dtype == torch.uint8:
            images = to_model_input(images, self.flip)  # (B, 3, S, S) float in [-1, 1]
        return images, attrs

    def device_images(self, device: torch.device) -> torch.Tensor:
        """(N, S, S, 3) uint8 copy of the training array on `device`, made on first use."""
        if self._device_images is None or self._device_images.device != device:
            log.info("Copying the %d training images (%.2f GB uint8) to %s", len(self.train_set),
                     self.train_set.images.nbytes / 1e9, device)
            self._device_images = self.train_set.images.to(device)
        return self._device_images


class CelebADataModule(FaceDataModule):
    """CelebA from its image files, or from the prepared array of the same split when one exists.

    prepared: "auto" uses a prepared file that matches these settings and the files on disk,
        reads the JPEGs when there is none, and refuses a stale or damaged one; True builds or
        rebuilds it first (celebgan.prepare); False always reads the JPEGs.
    prepared_dir: where prepared files live (data.prepared_dir, by default ROOT/prepared).
    """

    def __init__(self, *, root: str, split: str = "train", crop: str = "full", flip: bool = True,
                 prepared: str | bool = "auto", prepared_dir: str | None = None, **loader):
        super().__init__(**loader)
        self.root, self.split, self.crop, self.flip = root, split, crop, flip
        check_split(split)
        face_transform(self.img_size, crop, flip)  # a bad crop name fails at construction
        if prepared not in ("auto", True, False):
            raise UserError(f"data.prepared={prepared!r} must be auto, true or false.")
        self.prepared = prepared
        self.prepared_dir = prepared_dir if prepared_dir is not None else str(Path(root).expanduser() / "prepared")

    def build_dataset(self) -> Dataset:
        source = source_of(self.root, self.split, self.crop, self.img_size)
        files = source.files
        # A list file that lacks some of the split's images gives no attributes (celeba.list_images).
        self.data_attr_names = source.attr_names if source.attrs is not None else []
        attrs = self.chosen_columns(source.attrs)  # a name the data lacks fails here, before any decoding
        # A folder of images in no CelebA layout (no split files: every image trains) is not CelebA.
        plain = find_layout(self.root).kind == "plain"
        what = "Image folder" if plain else "CelebA"
        of_split = "" if plain else f" of split {self.split!r}"
        if self.prepared is not False:
            prepared, why = check_prepared(self.prepared_dir, source)
            record = record_path(self.prepared_dir, source)
            command = (f"python -m celebgan.prepare data.root={self.root} data.split={self.split} "
                       f"data.crop={self.crop} data.img_size={self.img_size} data.prepared_dir={self.prepared_dir}")
            if why and self.prepared == "auto":
                raise UserError(f"The prepared file {record} does not match data.root: {why}. Rebuild it with\n"
                                f"  {command}\nor train with data.prepared=true (rebuilds it first) or "
                                "data.prepared=false (reads the JPEGs).")
            if prepared is None and self.prepared is True:
                prepared = build(source, self.prepared_dir, root=str(self.root))
            if prepared is not None:
                log.info("%s: %d images%s from the prepared file %s", what, prepared.num_images, of_split,
                         prepared.images)
                attrs = self.chosen_columns(torch.from_numpy(np.load(prepared.attrs)))
                return ArrayFaces(prepared.images, attrs, gather=not self.on_device)
            log.info("No prepared file at %s: decoding JPEGs every epoch. `%s` (or `make prepare`) "
                     "decodes them once, for a much faster loader.", record, command)
        log.info("%s: %d images%s from %s", what, len(files), of_split, self.root)
        return ImageFiles(files, attrs, face_transform(self.img_size, self.crop, self.flip))

    def _eval_subset(self, split: str, limit: int | None) -> tuple[list[Path], torch.Tensor | None, list[int]]:
        """(every file of the split, their attributes or None, the seeded subset of `limit` measured)."""
        files, attrs, self.data_attr_names = list_images(self.root, split)
        if limit is None or limit >= len(files):
            return files, attrs, list(range(len(files)))
        # CelebA's files are not in random order; a seeded subset is a fair sample of the split.
        return files, attrs, seeded_subset(len(files), limit, seed=0).sort().values.tolist()

    def eval_dataset(self, split: str, limit: int | None = None) -> Dataset:
        files, attrs, keep = self._eval_subset(split, limit)
        return ImageFiles([files[i] for i in keep], attrs[keep] if attrs is not None else None,
                          face_transform(self.img_size, self.crop, flip=False))

    def fingerprint(self, split: str, limit: int | None = None) -> dict:
        files, _, keep = self._eval_subset(split, limit)
        # Names, sizes and modification times of the whole split: an added, removed or rewritten
        # image changes the subset or its pixels, and so the statistics.
        h = hash_files(files, relative_to=self.root)
        # And how they are decoded (crop, resize filter, EXIF orientation, transparency): the
        # prepared format's version, which a change to the decoding bumps.
        return {"dataset": "celeba", "split": split, "crop": self.crop, "img_size": self.img_size,
                "num_images": len(keep), "split_size": len(files), "files_sha256": h.hexdigest(),
                "decoding": prepared.FORMAT_VERSION}


class SyntheticDataModule(FaceDataModule):
    data_attr_names = SYNTHETIC_ATTR_NAMES

    # num_workers=0: the faces sit in memory; worker processes would only add overhead (conf/data/synthetic.yaml).
    def __init__(self, *, num_images: int = 10000, seed: int = 0, split: str = "train", flip: bool = True,
                 cache_dir: str | None = "auto", num_workers: int | str = 0, **loader):
        super().__init__(num_workers=num_workers, **loader)
        check_whole("data.num_images", num_images, 1)
        if split not in SPLIT_IDS:
            raise UserError(f"data.split={split!r} is not one of the synthetic faces' splits {list(SPLIT_IDS)}.")
        self.num_images, self.seed, self.split, self.flip = num_images, seed, split, flip
        if cache_dir == "auto":  # where every cache of celebgan goes (metrics.cache_dir's default too)
            cache_dir = os.environ.get("CELEBGAN_CACHE", "outputs/cache")
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.chosen_columns(None)  # the names are known: a name the faces lack fails at construction

    def build_dataset(self) -> Dataset:
        images, attrs = self.rendered(self.split, self.num_images)
        # (N, 3, S, S) -> (N, S, S, 3): ArrayFaces keeps images channels last, as prepared files do.
        return ArrayFaces(images.permute(0, 2, 3, 1).contiguous(), self.chosen_columns(attrs),
                          gather=not self.on_device)

    def eval_dataset(self, split: str, limit: int | None = None) -> Dataset:
        return TensorFaces(*self.rendered(split, limit or self.num_images))

    def rendered(self, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 3, S, S) uint8 faces and their (n, A) labels: read from cache_dir when a render of the
        same faces (fingerprint: seed, split, size, count, the renderer's version and code) is there,
        else rendered (10,000 faces: about 25 s idle, minutes on a loaded 2-core CPU) and kept there."""
        path = None
        if self.cache_dir is not None:
            key = hashlib.sha256(repr(sorted(self.fingerprint(split, n).items())).encode()).hexdigest()[:16]
            path = self.cache_dir / f"synthetic_{split}_{self.img_size}px_{n}_{key}.pt"
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
                images, attrs = cached["images"], cached["attrs"]
                if images.shape == (n, 3, self.img_size, self.img_size) and images.dtype == torch.uint8:
                    log.info("Synthetic faces: %d images of %dpx, split %r, from %s", n, self.img_size, split, path)
                    return images, attrs
            except FileNotFoundError:
                pass
            except Exception as err:  # a damaged cache is rendered again, never trusted
                log.warning("Synthetic faces: ignoring the unreadable cache %s (%s); rendering again", path, err)
        # Said before the render, the slow part of a run's start, with its time measured on the first faces.
        first = min(n, 100)
        began = time.perf_counter()
        head = render_faces(first, self.img_size, seed=self.seed, split=split)
        rate = first / max(time.perf_counter() - began, 1e-9)
        log.info("Synthetic faces: rendering %d images of %dpx, split %r (%.0f faces/s here: about %s)", n,
                 self.img_size, split, rate, format_duration(n / rate))
        rest = render_faces(n - first, self.img_size, seed=self.seed, split=split, start=first)
        images, attrs = torch.cat([head[0], rest[0]]), torch.cat([head[1], rest[1]])
        if path is not None:
            try:
                with atomic_write(path) as tmp:
                    torch.save({"images": images, "attrs": attrs}, tmp)
            except (UserError, RuntimeError) as err:  # a full disk or a read-only cache: train uncached
                log.warning("Synthetic faces: could not cache the render (%s)", err)
        return images, attrs

    def fingerprint(self, split: str, limit: int | None = None) -> dict:
        # Image i depends on (seed, split, i) and on the renderer: its declared version, and its
        # code's hash as a guard against a pixel change that forgot to bump the version.
        renderer = hashlib.sha256(Path(render_faces.__code__.co_filename).read_bytes()).hexdigest()
        return {"dataset": "synthetic", "split": split, "crop": "full", "img_size": self.img_size,
                "num_images": limit or self.num_images, "seed": self.seed,
                "renderer_version": RENDERER_VERSION, "renderer_sha256": renderer}
