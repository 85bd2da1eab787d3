"""Decode, crop and resize a CelebA split once into a uint8 array file that training memory-maps
(the command: `python -m celebgan.prepare`).

A prepared split is three files in data.prepared_dir (by default DATA_ROOT/prepared):
    celeba_{split}_{crop}_{size}.json                the record: fingerprint, shapes, file names
    celeba_{split}_{crop}_{size}.{build}.images.npy  (N, S, S, 3) uint8, channels last
    celeba_{split}_{crop}_{size}.{build}.attrs.npy   (N, A) uint8 0/1 attributes (A may be 0)
The arrays are written under temporary names and renamed into place before the record, which is
renamed last: a crash or kill at any moment leaves the previous complete build or none, never a
record that points at a half-written array. The images' array is checked against the disk's free
space and its blocks reserved before any image is decoded into it, so a full disk is one message
and the temporary goes at once (a memory-mapped write into a sparse file on a full disk is SIGBUS:
no message, the temporary left). The fingerprint covers the image list with each
file's size and mtime, the attribute file, crop, size, split and this file's format version, so a
changed dataset or setting is noticed before training uses the file.
"""
import errno
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from celebgan.data.batches import usable_cores
from celebgan.data.celeba import crop_resize, hash_files, list_images, read_image, say_large
from celebgan.errors import UserError, check_whole
from celebgan.gan.networks import num_stages
from celebgan.io import atomic_write, remove_stale_temporaries, temporary_sibling

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # bump when the decoding (crop, resize filter, layout) changes; 2: EXIF orientation, transparency
CHUNK = 256  # images per worker task: large enough to amortise IPC, small enough for a smooth bar


@dataclass
class Source:
    """What a prepared split is built from: the checked file list of one CelebA split."""

    files: list[Path]
    attrs: torch.Tensor | None  # (N, A) 0/1
    attr_names: list[str]
    split: str
    crop: str
    img_size: int

    @property
    def key(self) -> str:
        return f"celeba_{self.split}_{self.crop}_{self.img_size}"

    def fingerprint(self) -> str:
        """A digest of everything the prepared array depends on; cheap (one stat per file)."""
        h = hashlib.sha256()
        h.update(json.dumps([FORMAT_VERSION, self.split, self.crop, self.img_size, self.attr_names]).encode())
        # Names relative to the files' common folder: moving the dataset keeps its prepared files.
        common = os.path.commonpath([str(p) for p in self.files]) if len(self.files) > 1 else None
        hash_files(self.files, relative_to=common, h=h)
        if self.attrs is not None:
            h.update(np.ascontiguousarray(self.attrs.numpy().astype(np.uint8)).tobytes())
        return h.hexdigest()


def source_of(root: str | os.PathLike, split: str, crop: str, img_size: int) -> Source:
    crop_resize(img_size, crop)  # a bad crop name fails here
    files, attrs, attr_names = list_images(root, split)
    return Source(files, attrs, attr_names, split, crop, img_size)


def record_path(prepared_dir: str | os.PathLike, source: Source) -> Path:
    return Path(prepared_dir).expanduser() / f"{source.key}.json"


# ---------------------------------------------------------------------------------------------
# Reading a prepared split


@dataclass
class Prepared:
    images: Path  # (N, S, S, 3) uint8 .npy
    attrs: Path  # (N, A) uint8 .npy
    attr_names: list[str]
    num_images: int
    skipped: list[str]


def check_prepared(prepared_dir: str | os.PathLike, source: Source) -> tuple[Prepared | None, str]:
    """(the prepared split, "") when its record matches `source` and its arrays are whole;
    (None, "") when there is none; (None, why) when one exists but must not be used.
    Every reader comes here first, so what a killed build left (up to the size of the whole
    array) goes at the next use of the folder, not only at the next build."""
    record = record_path(prepared_dir, source)
    remove_stale_temporaries(record.parent, log)
    if not record.is_file():
        return None, ""
    try:
        meta = json.loads(record.read_text())
        images, attrs = record.parent / meta["images"], record.parent / meta["attrs"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"its record {record} is unreadable ({err})"
    if meta.get("format_version") != FORMAT_VERSION:
        return None, f"it was written by format version {meta.get('format_version')}, this celebgan reads {FORMAT_VERSION}"
    if meta.get("fingerprint") != source.fingerprint():
        return None, (f"its source changed: it was built from {meta.get('num_source_files')} files of "
                      f"{meta.get('root')!r}, and the file list, a file's size or mtime, or the attributes now differ")
    n, s = meta["num_images"], source.img_size
    for path, shape in ((images, (n, s, s, 3)), (attrs, (n, len(source.attr_names)))):
        if not path.is_file():
            return None, f"{path.name} is missing"
        try:
            array = np.load(path, mmap_mode="r")  # reads the header; fails on a file cut short
        except (OSError, ValueError, SyntaxError) as err:
            return None, f"{path.name} is damaged ({err})"
        if array.shape != shape or array.dtype != np.uint8:
            return None, f"{path.name} is damaged: it holds {array.shape} {array.dtype}, expected {shape} uint8"
    return Prepared(images, attrs, source.attr_names, n, meta.get("skipped", [])), ""


# ---------------------------------------------------------------------------------------------
# Writing a prepared split


# Built once per worker process, not once per image.
_crop_resize = functools.cache(crop_resize)


# Shared by the decoding processes of a build (_share): celeba.say_large's "said" flag.
_said_large = None


def _share(said_large) -> None:
    global _said_large
    _said_large = said_large


def decode(path: Path, crop: str, img_size: int) -> np.ndarray:
    """(S, S, 3) uint8: the JPEG path's decoding (face_transform) minus its flip and scaling."""
    img, large = read_image(path)
    if large is not None:
        say_large(path, large, _said_large)
    for t in _crop_resize(img_size, crop):
        img = t(img)
    return np.asarray(img, dtype=np.uint8)


def _decode_chunk(args) -> tuple[int, list[tuple[int, str]]]:
    """Decode files[start:start+len] into rows of the array at `out`; returns (count, [(bad index, why)])."""
    out, start, files, crop, img_size = args
    images = np.load(out, mmap_mode="r+")
    bad = []
    for i, path in enumerate(files, start):
        try:
            images[i] = decode(path, crop, img_size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            images[i] = 0
            bad.append((i, str(err)))
    images.flush()
    return len(files), bad


def build(source: Source, prepared_dir: str | os.PathLike, *, root: str = "", workers: int = 0,
          progress: bool = True) -> Prepared:
    """Decode `source` into a prepared split in `prepared_dir` (workers=0: one per core)."""
    record = record_path(prepared_dir, source)
    hint = (f" Prepared files need a writable folder: make {record.parent} writable or choose another "
            "with data.prepared_dir=DIR.")
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a read-only data.root, a folder of another user
        raise UserError(f"Could not create {record.parent}: {err}.{hint}") from None
    remove_stale_temporaries(record.parent, log)  # what a killed build left
    fingerprint = source.fingerprint()
    n, s = len(source.files), source.img_size
    stem = f"{source.key}.{fingerprint[:12]}"
    images_path, attrs_path = record.parent / f"{stem}.images.npy", record.parent / f"{stem}.attrs.npy"
    check_space(record.parent, _npy_bytes((n, s, s, 3)) + _npy_bytes((n, len(source.attr_names))), n, s)
    workers = workers or usable_cores()
    # Both arrays are renamed into place as the block ends (attrs, then images), the record after.
    with atomic_write(images_path, hint=hint) as tmp_images, atomic_write(attrs_path, hint=hint) as tmp_attrs:
        np.lib.format.open_memmap(tmp_images, mode="w+", dtype=np.uint8, shape=(n, s, s, 3)).flush()
        preallocate(tmp_images, images_path)
        tasks = [(tmp_images, i, source.files[i:i + CHUNK], source.crop, s) for i in range(0, n, CHUNK)]
        bad: list[tuple[int, str]] = []
        said_large = multiprocessing.Value("b", 0)  # a too-large image is spoken of once, by any worker
        with tqdm(total=n, desc=f"prepare {source.key}", unit="img", disable=not progress) as bar:
            if workers == 1:
                _share(said_large)
                results = map(_decode_chunk, tasks)
            else:
                # fork starts workers at once; they run PIL only, never torch's thread pools.
                method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
                pool = multiprocessing.get_context(method).Pool(min(workers, len(tasks)), _share, (said_large,))
                results = pool.imap_unordered(_decode_chunk, tasks)
            try:
                for count, chunk_bad in results:
                    bad += chunk_bad
                    bar.update(count)
            finally:
                if workers != 1:
                    pool.terminate()
        attrs = (source.attrs.numpy() if source.attrs is not None else np.zeros((n, 0))).astype(np.uint8)
        skipped = []
        if bad:
            bad_set = {i for i, _ in bad}
            skipped = [str(source.files[i]) for i in sorted(bad_set)]
            log.warning("Skipping %d unreadable images: %s", len(bad), "; ".join(
                f"{source.files[i]} ({why})" for i, why in sorted(bad)[:10]))
            keep = np.array([i for i in range(n) if i not in bad_set], dtype=np.int64)
            _compact(tmp_images, keep)
            attrs, n = attrs[keep], len(keep)
        if n == 0:
            raise UserError(f"None of the {len(source.files)} images could be read (first: {source.files[0]}).")
        with open(tmp_attrs, "wb") as f:  # a file object: np.save would append .npy to the name
            np.save(f, attrs)
    meta = {
        "format_version": FORMAT_VERSION, "fingerprint": fingerprint, "root": str(root),
        "split": source.split, "crop": source.crop, "img_size": s, "num_images": n,
        "num_source_files": len(source.files), "attr_names": source.attr_names, "skipped": skipped,
        "images": images_path.name, "attrs": attrs_path.name,
    }
    old = _referenced(record)
    with atomic_write(record, hint=hint) as tmp_record:  # the switch: from here on the new build is the one in use
        tmp_record.write_text(json.dumps(meta, indent=1))
    for name in old - {images_path.name, attrs_path.name}:
        (record.parent / name).unlink(missing_ok=True)
    log.info("Prepared %d images of split %r at %dpx (%s crop) into %s", n, source.split, s, source.crop, images_path)
    return Prepared(images_path, attrs_path, source.attr_names, n, skipped)


def _npy_bytes(shape: tuple[int, ...]) -> int:
    """The size of a uint8 .npy file of `shape`: its data and a header (128 bytes, or a few more)."""
    return int(np.prod(shape)) + 4096


def check_space(folder: Path, need: int, n: int, img_size: int) -> None:
    """Refuses, before anything is written, an array that the disk of `folder` cannot hold."""
    free = shutil.disk_usage(folder).free
    if need > free:
        raise UserError(f"Preparing {n:,} images of {img_size}px takes {_size(need)}, but the disk of {folder} "
                        f"has {_size(free)} free. Free space there, or put the prepared files on another disk "
                        "with data.prepared_dir=DIR.")


def _size(num_bytes: float) -> str:
    return f"{num_bytes / 1e9:,.1f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:,.2f} MB"


def preallocate(path: Path, name: Path) -> None:
    """Reserves the disk blocks of the whole file at `path` (the temporary of `name`) now.
    np.lib.format.open_memmap leaves it sparse, and a memory-mapped write into a hole that a full
    disk cannot fill kills the process with SIGBUS (exit 135, no message, the temporary left
    behind); reserved, a full disk is one UserError here, and the caller's atomic_write removes the
    temporary."""
    size = path.stat().st_size
    try:
        with open(path, "r+b") as f:
            if hasattr(os, "posix_fallocate"):
                try:
                    os.posix_fallocate(f.fileno(), 0, size)
                    return
                except OSError as err:
                    if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # else a file system without it
                        raise
            # The file's bytes (its header, then zeros) written back over it with ordinary writes,
            # which fill the holes: a full disk fails one of them with ENOSPC.
            offset = 0
            while offset < size:
                f.seek(offset)
                chunk = f.read(min(1 << 20, size - offset))
                f.seek(offset)
                f.write(chunk)
                offset += len(chunk)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise UserError(f"Could not write {name} ({_size(size)}): {err.strerror or err}. Free space on that "
                        "disk, or put the prepared files on another disk with data.prepared_dir=DIR.") from None


def _referenced(record: Path) -> set[str]:
    try:
        meta = json.loads(record.read_text())
        return {meta["images"], meta["attrs"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _compact(path: Path, keep: np.ndarray) -> None:
    """Rewrite the array at `path` with only the rows in `keep`, through a second temporary file."""
    images = np.load(path, mmap_mode="r")
    tmp = temporary_sibling(path)  # a temporary's name, so that one a kill left is found and removed
    try:
        shape = (len(keep), *images.shape[1:])
        check_space(path.parent, _npy_bytes(shape), len(keep), shape[1])
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        preallocate(tmp, path)
        for i in range(0, len(keep), 4096):
            out[i:i + 4096] = images[keep[i:i + 4096]]
        out.flush()
        del out, images
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def prepare(root: str, split: str, crop: str, img_size: int, prepared_dir: str, *, workers: int = 0,
            force: bool = False, progress: bool = True) -> Prepared:
    """The prepared split for these settings: the existing one when it matches, else a new build."""
    check_whole("workers", workers, 0, " (0: one per usable core)")
    num_stages(img_size)  # a size no model trains on (0, -5, 48) fails here, before any decoding
    source = source_of(root, split, crop, img_size)
    if not force:
        prepared, why = check_prepared(prepared_dir, source)
        if prepared is not None:
            log.info("Up to date: %s (%d images)", record_path(prepared_dir, source), prepared.num_images)
            return prepared
        if why:
            log.info("Rebuilding %s: %s", record_path(prepared_dir, source), why)
    return build(source, prepared_dir, root=str(root), workers=workers, progress=progress)
