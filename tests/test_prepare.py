"""Prepared CelebA arrays: content, fingerprints, damage and interrupted builds."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from celebgan.data import prepared as prep
from celebgan.data.batches import ArrayFaces
from celebgan.data.celeba import face_transform, list_images
from celebgan.data.modules import CelebADataModule, ImageFiles
from celebgan.errors import UserError
from conftest import cli_env, make_celeba, run_commands


def build_files(prepared_dir: Path) -> list[str]:
    return sorted(p.name for p in prepared_dir.iterdir())


def datamodule(root, prepared_dir, prepared="auto", **kw):
    return CelebADataModule(root=str(root), img_size=16, batch_size=2, num_workers=0, prepared=prepared,
                            prepared_dir=str(prepared_dir), **kw)


@pytest.mark.parametrize("workers", [1, 2])
def test_round_trip_matches_the_jpeg_path(celeba_root, tmp_path, workers):
    out = tmp_path / "prepared"
    prepared = prep.prepare(str(celeba_root), "all", "face", 16, str(out), workers=workers, progress=False)
    files, attrs, names = list_images(celeba_root, "all")
    images = np.load(prepared.images)
    assert images.shape == (len(files), 16, 16, 3) and images.dtype == np.uint8
    jpeg = ImageFiles(files, attrs, face_transform(16, "face", flip=False))
    for i in range(len(files)):
        expected = jpeg[i][0].add(1).mul(127.5)  # (3, S, S) back to 0..255
        got = torch.from_numpy(images[i]).permute(2, 0, 1).float()
        assert (got - expected).abs().max() <= 1.0  # one uint8 step: rounding of the [-1, 1] scaling
    assert torch.equal(torch.from_numpy(np.load(prepared.attrs)).long(), attrs)
    assert prepared.attr_names == names


def test_training_uses_a_matching_prepared_file_and_says_so(celeba_root, tmp_path, caplog):
    out = tmp_path / "prepared"
    dm = datamodule(celeba_root, out)
    with caplog.at_level("INFO"):
        dm.setup("fit")
    assert isinstance(dm.train_set, ImageFiles)  # none yet: the JPEGs, with a hint
    assert "celebgan.prepare" in caplog.text

    prep.prepare(str(celeba_root), "train", "full", 16, str(out), workers=1, progress=False)
    caplog.clear()
    dm = datamodule(celeba_root, out, attributes="all")
    with caplog.at_level("INFO"):
        dm.setup("fit")
    assert isinstance(dm.train_set, ArrayFaces) and len(dm.train_set) == 3
    assert "prepared file" in caplog.text
    images, attrs = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())))
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32 and attrs.shape == (2, 4)

    assert isinstance(datamodule(celeba_root, out, prepared=False).build_dataset(), ImageFiles)


def test_a_changed_source_is_refused_and_rebuilt_on_request(celeba_root, tmp_path):
    out = tmp_path / "prepared"
    first = prep.prepare(str(celeba_root), "train", "full", 16, str(out), workers=1, progress=False)
    image = celeba_root / "celeba" / "img_align_celeba" / "000002.jpg"
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file was replaced

    source = prep.source_of(celeba_root, "train", "full", 16)
    prepared, why = prep.check_prepared(out, source)
    assert prepared is None and "source changed" in why
    with pytest.raises(UserError, match="(?s)celebgan.prepare.*data.prepared=true"):
        datamodule(celeba_root, out).setup("fit")

    dm = datamodule(celeba_root, out, prepared=True)
    dm.setup("fit")  # rebuilds
    assert isinstance(dm.train_set, ArrayFaces)
    assert prep.check_prepared(out, source)[0] is not None
    assert not first.images.exists()  # the old build is gone, the new one replaced it
    assert build_files(out) == sorted([dm.train_set.path.name, dm.train_set.path.name.replace("images", "attrs"),
                                       "celeba_train_full_16.json"])


def test_a_damaged_file_is_refused(celeba_root, tmp_path):
    out = tmp_path / "prepared"
    prepared = prep.prepare(str(celeba_root), "train", "full", 16, str(out), workers=1, progress=False)
    with open(prepared.images, "r+b") as f:
        f.truncate(prepared.images.stat().st_size - 100)
    prepared, why = prep.check_prepared(out, prep.source_of(celeba_root, "train", "full", 16))
    assert prepared is None and "damaged" in why
    with pytest.raises(UserError, match="damaged"):
        datamodule(celeba_root, out).setup("fit")

    (out / "celeba_train_full_16.json").write_text("{not json")
    with pytest.raises(UserError, match="unreadable"):
        datamodule(celeba_root, out).setup("fit")


def test_an_unreadable_image_is_left_out(celeba_root, tmp_path):
    (celeba_root / "celeba" / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg")
    prepared = prep.prepare(str(celeba_root), "train", "full", 16, str(tmp_path / "p"), workers=1, progress=False)
    assert prepared.num_images == 2 and prepared.skipped[0].endswith("000002.jpg")
    assert np.load(prepared.images).shape == (2, 16, 16, 3)
    files, attrs, _ = list_images(celeba_root, "train")
    assert torch.equal(torch.from_numpy(np.load(prepared.attrs)).long(), attrs[[0, 2]])


def test_an_error_mid_build_leaves_the_previous_build_in_place(celeba_root, tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    prep.prepare(str(celeba_root), "train", "full", 16, str(out), workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []

    def failing_decode(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if stopped mid-build
        return np.zeros((16, 16, 3), np.uint8)

    monkeypatch.setattr(prep, "decode", failing_decode)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(str(celeba_root), "train", "full", 16, str(out), workers=1, force=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporary left, nothing changed


@pytest.mark.integration
def test_a_killed_build_leaves_no_half_file_in_place(tmp_path):
    root = tmp_path / "celeba_root"
    make_celeba(root, per_split=20)
    out = tmp_path / "prepared"
    # The child decodes slowly, so the kill lands while the temporary array is half written.
    script = (
        "import sys, time; from celebgan.data import prepared as p\n"
        "decode = p.decode\n"
        "p.decode = lambda *a: (time.sleep(0.2), decode(*a))[1]\n"
        f"p.prepare({str(root)!r}, 'train', 'full', 16, {str(out)!r}, workers=1, progress=False)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], env=cli_env())
    deadline = time.monotonic() + 120
    while not any(".tmp" in p.name for p in out.glob("*")) and time.monotonic() < deadline:
        assert child.poll() is None, "the build ended before it could be killed"
        time.sleep(0.05)
    time.sleep(0.5)
    child.send_signal(signal.SIGKILL)
    child.wait()
    names = build_files(out)
    assert names and all(".tmp" in n for n in names)  # only the temporary exists, under its own name
    source = prep.source_of(root, "train", "full", 16)
    assert prep.check_prepared(out, source) == (None, "")  # so training sees no prepared file
    prepared = prep.prepare(str(root), "train", "full", 16, str(out), workers=1, progress=False)
    assert prepared.num_images == 20


@pytest.mark.integration
def test_prepare_command(celeba_root, tmp_path):
    out, work = tmp_path / "prepared", tmp_path / "work"
    work.mkdir()
    args = ["data=celeba32", f"data.root={celeba_root}", "data.img_size=16", f"data.prepared_dir={out}", "workers=1"]
    first, again, forced, missing, help_ = run_commands([("celebgan.prepare", a) for a in [
        args, args, [*args, "force=true"], [*args, f"data.root={tmp_path / 'nowhere'}"], ["--help"]]], work)
    assert first["code"] == again["code"] == forced["code"] == 0, first["output"] + again["output"]
    meta = json.loads((out / "celeba_train_full_16.json").read_text())
    assert meta["num_images"] == 3 and meta["img_size"] == 16
    assert "Up to date" in again["output"] and "Up to date" not in forced["output"]
    assert missing["code"] == 2 and "not found" in missing["output"] and "Traceback" not in missing["output"]
    assert help_["code"] == 0 and all(key in help_["output"] for key in ("workers: 0", "force: false", "prepared_dir"))
    assert list(work.iterdir()) == []  # no Hydra folder, no log


@pytest.mark.integration
def test_a_killed_builds_temporaries_go_when_the_folder_is_next_opened(celeba_root, tmp_path):
    out = tmp_path / "prepared"
    prepared = prep.prepare(str(celeba_root), "train", "full", 16, str(out), workers=1, progress=False)
    before = build_files(out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = os.getppid()  # the process that started this test runs as long as it does

    def leftovers() -> list[Path]:
        # As a killed `--force` rebuild leaves them: the array, and the copy that leaves out unreadable images.
        array = out / f".{prepared.images.name}.tmp{dead.pid}"
        stale = [array, out / f".{array.name}.tmp{dead.pid}"]
        for path in stale:
            path.write_bytes(b"\0" * 1000)
        (out / f".{prepared.images.name}.tmp{live}").write_bytes(b"\0" * 1000)
        return stale

    opens = [
        lambda: prep.prepare(str(celeba_root), "train", "full", 16, str(out), workers=1, progress=False),  # up to date
        lambda: datamodule(celeba_root, out).setup("fit"),  # training reads it
    ]
    for open_folder in opens:
        stale = leftovers()
        open_folder()
        assert not any(p.exists() for p in stale)
        assert build_files(out) == sorted([*before, f".{prepared.images.name}.tmp{live}"])  # another writer's stays
        (out / f".{prepared.images.name}.tmp{live}").unlink()


@pytest.mark.parametrize("workers", [-1, "4", 2.5])
def test_a_bad_worker_count_is_refused_before_anything_is_written(celeba_root, tmp_path, workers):
    out = tmp_path / "prepared"
    with pytest.raises(UserError, match=r"workers=.* must be a whole number >= 0 \(0: one per usable core\)"):
        prep.prepare(str(celeba_root), "train", "full", 16, str(out), workers=workers, progress=False)
    assert not out.exists()


def test_a_sixteen_bit_scan_is_prepared_as_its_eight_bit_picture(tmp_path):
    root = tmp_path / "celeba_root"
    names = make_celeba(root, per_split=1)
    img_dir = root / "celeba" / "img_align_celeba"
    # The same picture in 16-bit grayscale under the name of the second image.
    gray = np.asarray(Image.open(img_dir / names[0]).convert("L"))
    Image.fromarray(gray).save(img_dir / names[1])
    Image.fromarray(gray.astype(np.uint16) * 257).save(img_dir / names[2], format="PNG")
    prepared = prep.prepare(str(root), "all", "full", 16, str(tmp_path / "p"), workers=1, progress=False)
    images = np.load(prepared.images).astype(int)
    assert prepared.num_images == 3 and images[1].std() > 20  # a picture, not a flat square
    assert np.abs(images[2] - images[1]).max() <= 1


def test_a_disk_too_small_for_the_array_is_refused_before_anything_is_written(celeba_root, tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    real = prep.shutil.disk_usage
    monkeypatch.setattr(prep.shutil, "disk_usage", lambda path: real(path)._replace(free=1000))
    attr_names = list_images(celeba_root, "train")[2]
    need = prep._npy_bytes((3, 16, 16, 3)) + prep._npy_bytes((3, len(attr_names)))  # the arrays, with headers
    with pytest.raises(UserError, match=r"3 images of 16px takes 0.01 MB, but the disk of .* has 0.00 MB free.*data.prepared_dir"):
        prep.prepare(str(celeba_root), "train", "full", 16, str(out), workers=1, progress=False)
    assert build_files(out) == []  # not even a temporary
    monkeypatch.setattr(prep.shutil, "disk_usage", lambda path: real(path)._replace(free=need))
    assert prep.prepare(str(celeba_root), "train", "full", 16, str(out), workers=1, progress=False).num_images == 3


@pytest.mark.parametrize("fallocate", [True, False])
def test_a_disk_that_fills_while_writing_is_an_error_and_leaves_no_temporary(celeba_root, tmp_path, monkeypatch,
                                                                             fallocate):
    # A memory-mapped write into a sparse file on a full disk is SIGBUS (exit 135, no message): the
    # array's blocks are reserved first, with posix_fallocate or, without it, with ordinary writes,
    # so that the full disk is an ENOSPC here.
    out = tmp_path / "prepared"
    prep.prepare(str(celeba_root), "train", "full", 16, str(out), workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    if fallocate:
        monkeypatch.setattr(prep.os, "posix_fallocate", full, raising=False)
    else:
        monkeypatch.delattr(prep.os, "posix_fallocate", raising=False)
        monkeypatch.setattr(prep.os, "fsync", full)
    with pytest.raises(UserError, match=r"Could not write .*\.images\.npy \(0\.00 MB\): No space left on device\. Free space"):
        prep.prepare(str(celeba_root), "train", "full", 16, str(out), workers=1, force=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the temporary went at once
