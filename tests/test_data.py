"""CelebA layouts on a miniature tree, transforms, bad input, and the synthetic faces."""
import logging
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from celebgan.data import batches
from celebgan.data.celeba import face_transform, find_layout, list_images
from celebgan.data.modules import CelebADataModule, ImageFiles, SyntheticDataModule
from celebgan.errors import UserError
from celebgan.data.prepared import decode
from celebgan.run.resume import differences
from celebgan.data.synthetic import ATTR_NAMES, render_faces
from conftest import ATTRS, compose_config, make_celeba


def dm(root, **kw) -> CelebADataModule:
    kw = {"img_size": 32, "batch_size": 2, "num_workers": 0, **kw}
    m = CelebADataModule(root=str(root), **kw)
    m.setup("fit")
    return m


@pytest.mark.parametrize("layout", ["torchvision", "kaggle"])
def test_both_layouts_select_the_official_split(tmp_path, layout):
    names = make_celeba(tmp_path, layout, per_split=3)
    assert find_layout(tmp_path).kind == layout
    for split, idx in [("train", range(0, 3)), ("valid", range(3, 6)), ("test", range(6, 9)), ("all", range(9))]:
        files, attrs, attr_names = list_images(tmp_path, split)
        assert [f.name for f in files] == [names[i] for i in idx]
        assert attr_names == ATTRS and attrs.shape == (len(idx), len(ATTRS))
        assert set(attrs.unique().tolist()) <= {0, 1}  # CelebA's -1/1 become 0/1


def test_attributes_follow_the_file(tmp_path):
    make_celeba(tmp_path, "torchvision")
    lines = (tmp_path / "celeba" / "list_attr_celeba.txt").read_text().splitlines()
    first = [int(v) for v in lines[2].split()[1:]]
    _, attrs, _ = list_images(tmp_path, "train")
    assert attrs[0].tolist() == [int(v > 0) for v in first]


@pytest.mark.parametrize("crop,flip", [("full", False), ("face", False), ("full", True)])
def test_batches_are_images_in_minus_one_one(celeba_root, crop, flip):
    m = dm(celeba_root, crop=crop, flip=flip, attributes="all")
    x, attrs = next(iter(m.train_dataloader()))
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.max() > 0.5 and x.min() < -0.5
    assert attrs.shape == (2, len(ATTRS))


def test_crop_modes_take_the_centre_square():
    # A 178x218 image whose border band (outside the central 108x108) is red and centre green.
    arr = np.zeros((218, 178, 3), np.uint8)
    arr[..., 0] = 255
    arr[55:163, 35:143] = (0, 255, 0)
    img = Image.fromarray(arr)
    face = face_transform(16, "face", flip=False)(img)
    full = face_transform(16, "full", flip=False)(img)
    assert face[1].min() > 0.9 and face[0].max() < -0.9  # all green: only the face square
    assert full[0].max() > 0.9  # the wider crop still holds red border


def test_flip_mirrors_about_half_the_time():
    # Left half dark, right half bright; a flipped image is bright on the left.
    arr = np.zeros((218, 178, 3), np.uint8)
    arr[:, 89:] = 255
    img = Image.fromarray(arr)
    t = face_transform(16, "full", flip=True)
    torch.manual_seed(0)
    flipped = [bool(t(img)[:, :, 0].mean() > 0) for _ in range(400)]
    assert 0.4 < np.mean(flipped) < 0.6
    assert all(face_transform(16, "full", flip=False)(img)[:, :, 0].mean() < 0 for _ in range(20))


def test_plain_folder_trains_on_every_image_and_converts_modes(tmp_path):
    rgb = np.full((40, 30, 3), 128, np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.jpg")
    Image.fromarray(rgb[..., 0], "L").save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((40, 30), 7, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "sub_cmyk.jpg")
    files, attrs, _ = list_images(tmp_path, "train")
    assert len(files) == 4 and attrs is None
    ds = ImageFiles(files, None, face_transform(16, "full", flip=False))
    for i in range(4):
        x, a = ds[i]
        assert x.shape == (3, 16, 16) and a.numel() == 0
    with pytest.raises(UserError, match="plain folder"):
        list_images(tmp_path, "test")


def test_a_plain_folder_is_announced_as_an_image_folder_and_celeba_as_celeba(tmp_path, celeba_root, caplog):
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((20, 20, 3), 60 * i, np.uint8)).save(folder / f"{i}.png")
    with caplog.at_level(logging.INFO, logger="celebgan.data.modules"):
        dm(folder)
        dm(celeba_root)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(("Image folder:", "CelebA:"))]
    assert said == [f"Image folder: 4 images from {folder}", f"CelebA: 3 images of split 'train' from {celeba_root}"]


def _pixels(dataset: ImageFiles, i: int) -> np.ndarray:
    return dataset[i][0].add(1).mul(127.5).numpy()  # (3, S, S) back to 0..255


def test_wide_grayscale_is_scaled_to_the_8_bit_picture_it_came_from(tmp_path):
    # An 8-bit grayscale picture with every level, and its wider versions as scanners and
    # scientific tools write them: 16 bits with extra precision below the 8, a 16-bit range in a
    # 32-bit integer TIFF, floats in [0, 1].
    rng = np.random.default_rng(0)
    gray = rng.permutation(np.arange(256, dtype=np.uint8).repeat(4)).reshape(32, 32)
    Image.fromarray(gray).save(tmp_path / "a_8bit.png")
    wide = gray.astype(np.int64) * 257 + rng.integers(-128, 129, gray.shape)
    Image.fromarray(np.clip(wide, 0, 65535).astype(np.uint16)).save(tmp_path / "b_16bit.png")
    Image.fromarray(np.clip(wide, 0, 65535).astype(np.int32)).save(tmp_path / "c_int32.tif")
    Image.fromarray((gray / 255).astype(np.float32)).save(tmp_path / "d_float.tif")
    assert [Image.open(tmp_path / n).mode for n in ("b_16bit.png", "c_int32.tif", "d_float.tif")] == ["I;16", "I", "F"]
    files, _, _ = list_images(tmp_path, "all")
    expected = np.repeat(gray[None].astype(np.float32), 3, 0)
    for img_size in (32, 16):  # each pixel as it is, then through the resize
        ds = ImageFiles(files, None, face_transform(img_size, "full", flip=False))
        eight_bit = _pixels(ds, 0)
        if img_size == 32:
            assert np.abs(eight_bit - expected).max() < 0.01
        for i in (1, 2, 3):
            assert np.abs(_pixels(ds, i) - eight_bit).max() <= 1.01, files[i].name
        # The prepared array decodes the same way.
        for i in (1, 2, 3):
            got = decode(files[i], "full", img_size).transpose(2, 0, 1).astype(np.float32)
            assert np.abs(got - eight_bit).max() <= 1.01, files[i].name


def test_wide_grayscale_outside_its_range_is_skipped_by_name(tmp_path, caplog):
    Image.fromarray(np.full((20, 20), 128, np.uint8)).save(tmp_path / "a_fine.png")
    Image.fromarray(np.full((20, 20), 200.0, np.float32)).save(tmp_path / "b_float_0_255.tif")
    Image.fromarray(np.full((20, 20), -5, np.int32)).save(tmp_path / "c_signed.tif")
    files, _, _ = list_images(tmp_path, "all")
    ds = ImageFiles(files, None, face_transform(16, "full", flip=False))
    caplog.set_level(logging.WARNING)
    for i in (1, 2):  # neither is clipped to white or black: the readable image stands in
        assert np.abs(_pixels(ds, i) - 128).max() <= 1
    assert ds.skipped == {str(files[1]), str(files[2])}
    assert "b_float_0_255.tif" in caplog.text and "outside the 0..1" in caplog.text
    assert "c_signed.tif" in caplog.text and "outside the 0..65535" in caplog.text


def test_a_phone_photo_trains_upright_as_its_exif_orientation_says(tmp_path):
    # A portrait picture, dark on top and light below; the phone stores its pixels sideways (rotated
    # a quarter turn counter-clockwise) with EXIF orientation 6: "turn a quarter clockwise to show".
    upright = np.zeros((32, 16, 3), np.uint8)
    upright[16:] = 240
    Image.fromarray(upright).save(tmp_path / "a_upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "b_phone.jpg", quality=100,
                                                                       exif=exif)
    files, _, _ = list_images(tmp_path, "all")
    ds = ImageFiles(files, None, face_transform(16, "full", flip=False))
    assert np.abs(_pixels(ds, 1) - _pixels(ds, 0)).max() <= 8  # JPEG's rounding; sideways differs by 240
    prepared = decode(files[1], "full", 16).transpose(2, 0, 1).astype(np.float32)
    assert np.abs(prepared - _pixels(ds, 0)).max() <= 8


def test_transparent_pixels_are_white_whatever_colour_they_hide(tmp_path):
    # The left half opaque blue, the right half transparent over a hidden red (or palette index 1,
    # red, marked transparent; or gray with alpha), which convert("RGB") would show.
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (0, 0, 255, 255)
    rgba[:, 8:] = (255, 0, 0, 0)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a_rgba.png")
    palette = Image.fromarray(np.repeat([[0] * 8 + [1] * 8], 16, 0).astype(np.uint8), "P")
    palette.putpalette([0, 0, 255, 255, 0, 0])
    palette.save(tmp_path / "b_palette.png", transparency=1)
    palette.save(tmp_path / "c_palette.gif", transparency=1)
    la = np.zeros((16, 16, 2), np.uint8)
    la[:, :8, 1] = 255
    la[:, 8:, 1] = 128  # half transparent black: mid-gray on white
    Image.fromarray(la, "LA").save(tmp_path / "d_gray_alpha.png")
    files, _, _ = list_images(tmp_path, "all")
    assert [Image.open(f).mode for f in files] == ["RGBA", "P", "P", "LA"]
    ds = ImageFiles(files, None, face_transform(16, "full", flip=False))
    for i in range(3):
        pixels = _pixels(ds, i)
        assert np.abs(pixels[:, :, 8:] - 255).max() < 0.01, files[i].name
        assert np.abs(pixels[:, :, :8] - np.array([0, 0, 255])[:, None, None]).max() < 0.01, files[i].name
        assert np.array_equal(decode(files[i], "full", 16).transpose(2, 0, 1), pixels.round()), files[i].name
    assert np.abs(_pixels(ds, 3)[:, :, 8:] - 127).max() <= 1 and _pixels(ds, 3)[:, :, :8].max() < 0.01


def test_a_huge_image_is_read_and_said_once_in_celebgans_words(tmp_path, monkeypatch, caplog):
    # PIL warns (DecompressionBombWarning) above MAX_IMAGE_PIXELS and refuses above twice that; a
    # lower limit stands in for a 10000x10000 photo.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(tmp_path / name)  # 400 pixels
    files, _, _ = list_images(tmp_path, "all")
    ds = ImageFiles(files, None, face_transform(16, "full", flip=False))
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's own warning would fail here
        for _ in range(2):
            assert np.abs(_pixels(ds, 0) - 90).max() < 0.01 and np.abs(_pixels(ds, 1) - 90).max() < 0.01
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and f"{files[0]} is 20x20 pixels, more than the 300 that PIL reads" in said[0], said
    assert ds.skipped == set()


@pytest.mark.parametrize("layout", ["torchvision", "kaggle"])
def test_list_files_with_blanks_after_the_values_read_as_clean_ones(tmp_path, layout):
    make_celeba(tmp_path / "clean", layout)
    make_celeba(tmp_path / "blanks", layout)
    lists = sorted((tmp_path / "blanks").rglob("list_*"))
    assert len(lists) == 2
    for path in lists:
        path.write_text("".join(f"{line}  \t \n" for line in path.read_text().splitlines()) + " \n\n")
    for split in ("train", "test", "all"):
        clean, blanks = list_images(tmp_path / "clean", split), list_images(tmp_path / "blanks", split)
        assert [f.name for f in blanks[0]] == [f.name for f in clean[0]]
        assert torch.equal(blanks[1], clean[1]) and blanks[2] == clean[2] == ATTRS


def test_missing_root_names_the_path_layouts_and_synthetic(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(UserError) as err:
        dm(missing)
    msg = str(err.value)
    assert str(missing) in msg and "torchvision" in msg and "Kaggle" in msg and "data=synthetic" in msg


def test_folder_without_images_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match="No images found"):
        dm(tmp_path)


def test_half_downloaded_celeba_is_refused(celeba_root):
    (celeba_root / "celeba" / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(UserError, match=r"1 of the 3 images of split 'train'.*000002.jpg.*incomplete"):
        dm(celeba_root)


def test_missing_partition_file_needs_split_all(celeba_root):
    (celeba_root / "celeba" / "list_eval_partition.txt").unlink()
    with pytest.raises(UserError, match="data.split=all"):
        dm(celeba_root)
    assert len(dm(celeba_root, split="all").train_set) == 9


def test_corrupt_truncated_and_empty_files_are_skipped_and_reported(celeba_root, caplog):
    img_dir = celeba_root / "celeba" / "img_align_celeba"
    (img_dir / "000001.jpg").write_bytes(b"")  # zero bytes
    data = (img_dir / "000002.jpg").read_bytes()
    (img_dir / "000002.jpg").write_bytes(data[: len(data) // 3])  # truncated
    (img_dir / "000003.jpg").write_bytes(b"this is not a jpeg" * 10)  # corrupt
    caplog.set_level(logging.WARNING)
    m = dm(celeba_root, split="all", flip=False)
    assert len(m.train_set) == 8  # the empty file is left out up front
    assert "000001.jpg" in caplog.text
    items = [m.train_set[i] for i in range(len(m.train_set))]  # an epoch does not crash
    assert all(x.shape == (3, 32, 32) for x, _ in items)
    # Each unreadable file is replaced by the next readable one (000004.jpg), image and attributes.
    for bad in (0, 1):
        assert torch.equal(items[bad][0], items[2][0]) and torch.equal(items[bad][1], items[2][1])
    assert "000002.jpg" in caplog.text and "000003.jpg" in caplog.text
    assert m.train_set.skipped == {str(img_dir / "000002.jpg"), str(img_dir / "000003.jpg")}


def test_a_folder_of_only_unreadable_images_is_one_clear_error(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"this is not a jpeg")
    files, _, _ = list_images(tmp_path, "all")
    with pytest.raises(UserError, match="None of the 2 images could be read"):
        ImageFiles(files, None, face_transform(16, "full", flip=False))[0]


def test_bad_split_and_crop_values(celeba_root):
    with pytest.raises(UserError, match="data.split='training'"):
        dm(celeba_root, split="training")
    with pytest.raises(UserError, match="data.crop='tight'"):
        CelebADataModule(root=str(celeba_root), crop="tight")
    with pytest.raises(ValueError, match="img_size=48"):
        CelebADataModule(root=str(celeba_root), img_size=48)


def test_a_bad_split_is_refused_at_construction_naming_the_valid_ones(celeba_root):
    with pytest.raises(UserError, match=r"data.split='bogus'.*\['train', 'valid', 'test'\]"):
        SyntheticDataModule(num_images=8, img_size=16, batch_size=4, num_workers=0, split="bogus")
    with pytest.raises(UserError, match=r"data.split='bogus'.*'all'"):
        CelebADataModule(root=str(celeba_root / "nowhere"), split="bogus")  # before the folder is looked at
    m = SyntheticDataModule(num_images=8, img_size=16, batch_size=4, num_workers=0)
    with pytest.raises(UserError, match="'all'.*not one of"):  # a real split that no synthetic faces have
        m.eval_dataset("all")


def test_num_workers_auto_is_one_per_usable_core_at_most_four(monkeypatch):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert batches.usable_cores() == cores
    m = SyntheticDataModule(num_images=8, img_size=16, batch_size=4, num_workers="auto")
    assert m.num_workers == min(4, cores)
    for usable, expected in ((1, 1), (2, 2), (3, 3), (64, 4)):
        monkeypatch.setattr(batches, "usable_cores", lambda usable=usable: usable)
        assert SyntheticDataModule(num_images=8, img_size=16, num_workers="auto").num_workers == expected
        assert SyntheticDataModule(num_images=8, img_size=16, num_workers=6).num_workers == 6  # as given
    for bad in (-1, "many", "AUTO", 1.5, True):
        with pytest.raises(UserError, match=r"data.num_workers=.* or auto"):
            SyntheticDataModule(num_images=8, img_size=16, num_workers=bad)


def test_the_celeba_presets_size_their_workers_and_resume_ignores_them(tmp_path):
    cfg = compose_config(["data=celeba32"], tmp_path)
    assert cfg.data.num_workers == "auto"
    saved = {"data": {"num_workers": 4, "img_size": 32}}
    assert differences(saved, {"data": {"num_workers": "auto", "img_size": 32}}, ("data",)) == []
    assert differences(saved, {"data": {"num_workers": 4, "img_size": 64}}, ("data",)) == ["data.img_size: 32 -> 64"]


def test_dataset_smaller_than_a_batch_is_refused(celeba_root):
    with pytest.raises(UserError, match="fewer than one batch"):
        dm(celeba_root, batch_size=64)


# --- synthetic faces ---------------------------------------------------------------------------

def test_synthetic_faces_are_deterministic_per_seed_and_index():
    a, la = render_faces(6, 32, seed=3)
    b, lb = render_faces(6, 32, seed=3)
    c, _ = render_faces(6, 32, seed=4)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)
    # Image i depends only on (seed, split, i): a longer draw starts with the same images.
    d, _ = render_faces(8, 32, seed=3)
    assert torch.equal(d[:6], a)
    t, _ = render_faces(6, 32, seed=3, split="test")
    assert not torch.equal(t, a)


@pytest.mark.parametrize("img_size", [16, 32, 64, 128])
def test_synthetic_faces_at_every_size(img_size):
    x, attrs = render_faces(4, img_size)
    assert x.shape == (4, 3, img_size, img_size) and x.dtype == torch.uint8


def test_synthetic_attributes_are_celeba_style_and_varied():
    x, attrs = render_faces(300, 32, seed=0)
    assert attrs.shape == (300, len(ATTR_NAMES)) and set(attrs.unique().tolist()) == {0, 1}
    rates = attrs.float().mean(0)
    assert ((rates > 0.05) & (rates < 0.95)).all()  # every attribute occurs, none always
    hair = attrs[:, [ATTR_NAMES.index(n) for n in ["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"]]]
    bald = attrs[:, ATTR_NAMES.index("Bald")]
    assert torch.equal(hair.sum(1), 1 - bald)  # exactly one hair colour unless bald
    # The labels describe the pixels: smiling mouths show white teeth in the lower face.
    smiling = attrs[:, ATTR_NAMES.index("Smiling")].bool()
    lower = x[:, :, 18:26, 10:22].float()
    white = ((lower > 235).all(1)).float().mean((1, 2))
    assert white[smiling].mean() > 3 * white[~smiling].mean()
    # A crowd, not one face: images differ a lot from each other.
    assert x.float().std(0).mean() > 30


def test_synthetic_datamodule_batches(tmp_path):
    m = SyntheticDataModule(num_images=32, img_size=16, batch_size=8, num_workers=0, attributes="all")
    m.setup("fit")
    raw, attrs = next(iter(m.train_dataloader()))
    assert raw.dtype == torch.uint8  # converted on the training device, after the transfer
    x, attrs = m.on_after_batch_transfer((raw, attrs))
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert attrs.shape == (8, len(ATTR_NAMES))
    assert m.attr_names == ATTR_NAMES


@pytest.mark.integration
def test_an_unreadable_file_is_reported_once_across_workers_and_epochs(celeba_root, tmp_path):
    # Worker processes log to their own stderr: run the loader in a child and count its lines.
    (celeba_root / "celeba" / "img_align_celeba" / "000003.jpg").write_bytes(b"not a jpeg" * 10)
    script = textwrap.dedent(f"""
        import logging, torch
        from celebgan.data.modules import CelebADataModule
        logging.basicConfig(level=logging.WARNING)
        m = CelebADataModule(root={str(celeba_root)!r}, split="all", img_size=16, batch_size=3,
                             num_workers=2, prepared=False, pin_memory=False)
        m.setup("fit")
        for epoch in range(3):  # persistent workers: each one meets the file in some epoch
            for _ in m.train_dataloader():
                pass
        assert m.train_set.skipped == {{m.train_set.files[2].as_posix()}}
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Skipping unreadable image") == 1, result.stderr
