"""celebgan.sample on the session's trained run: every mode, and the errors."""
import logging
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from conftest import CONF_DIR, TRAINED_EPOCHS, run_commands
from test_evaluate import eval_cfg
from hydra import compose, initialize_config_dir
from PIL import Image

import celebgan
from celebgan.gan.directions import attribute_scores, edit_latents
from celebgan.metrics.judge import RECIPE_VERSION, cached_classifier
from celebgan.run.checkpoint import load_gan, real_subset
from celebgan.errors import UserError
from celebgan.evaluate import evaluate
from celebgan.gan.images import generate, latent_batches, latents
from celebgan.gan.module import GAN
from celebgan.sample import sample, slerp

EPOCHS = TRAINED_EPOCHS
PAD = 2  # make_grid's gap between tiles, and around them


@pytest.fixture(scope="module")
def run(trained_run) -> Path:
    return trained_run.dir


@pytest.fixture(scope="module")
def ckpt(trained_run) -> Path:
    return trained_run.ckpt


def sample_cfg(ckpt: Path | None, out: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="sample", overrides=[f"ckpt={ckpt}" if ckpt else "ckpt=null",
                                                        f"out={out}", "device=cpu", *overrides])


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def tile(grid: np.ndarray, row: int, col: int, size: int = 16) -> np.ndarray:
    y, x = PAD + row * (size + PAD), PAD + col * (size + PAD)
    return grid[y:y + size, x:x + size]


def as_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) in [-1, 1] -> (N, S, S, 3) uint8, rounded as save_image rounds."""
    x = ((images + 1) / 2).clamp(0, 1).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def test_grid_has_the_right_size_and_is_reproducible_for_a_seed(ckpt, tmp_path):
    a = sample(sample_cfg(ckpt, tmp_path / "a.png", "n=12", "nrow=4", "seed=3"))["out"]
    b = sample(sample_cfg(ckpt, tmp_path / "b.png", "n=12", "nrow=4", "seed=3"))["out"]
    c = sample(sample_cfg(ckpt, tmp_path / "c.png", "n=12", "nrow=4", "seed=4"))["out"]
    assert Image.open(a).size == (PAD + 4 * (16 + PAD), PAD + 3 * (16 + PAD))  # 4 columns, 3 rows
    assert a.read_bytes() == b.read_bytes()
    assert not np.array_equal(pixels(a), pixels(c))
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_images_writes_n_pngs_in_a_new_folder_and_refuses_to_overwrite(ckpt, tmp_path):
    out = tmp_path / "fid"
    result = sample(sample_cfg(ckpt, out, "mode=images", "n=10", "batch_size=4", "seed=3"))
    files = sorted(out.iterdir())
    assert result["count"] == 10 and [f.name for f in files] == [f"{i:06d}.png" for i in range(10)]
    assert all(Image.open(f).size == (16, 16) for f in files)
    # Image i is sample i of the seed's latents, whatever the batching.
    gan, _ = load_gan(ckpt)
    expected = as_uint8(generate(gan, latents(10, gan.generator.nz, 3)))
    for f, want in zip(files, expected):
        assert np.abs(pixels(f).astype(int) - want).max() <= 1
    with pytest.raises(UserError, match="already exists"):
        sample(sample_cfg(ckpt, out, "mode=images", "n=2"))
    assert len(list(out.iterdir())) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fid"]


@pytest.mark.parametrize("nz", [1, 3, 100])
def test_latent_batches_are_the_seeds_latents_whatever_the_batch_size(nz):
    for n in (1, 15, 17, 33, 100, 515):
        for batch_size in (1, 5, 16, 17, 64):
            batches = list(latent_batches(n, nz, 7, batch_size))
            assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
            assert 0 < len(batches[-1]) <= batch_size
            assert torch.equal(torch.cat(batches), latents(n, nz, 7)), (n, batch_size)


def test_images_draw_no_progress_bar_into_a_file(ckpt, tmp_path, capfd):
    # stderr is captured here, as it is when written to a log file: no bar redrawn with \r
    sample(sample_cfg(ckpt, tmp_path / "images", "mode=images", "n=12", "batch_size=4"))
    err = capfd.readouterr().err
    assert "\r" not in err and "images:" not in err


def test_images_streams_in_batches_the_images_one_batch_writes(ckpt, tmp_path, caplog):
    n = 37
    sample(sample_cfg(ckpt, tmp_path / "one", "mode=images", f"n={n}", f"batch_size={n}", "seed=5"))
    with caplog.at_level("INFO", logger="celebgan.sample"):
        sample(sample_cfg(ckpt, tmp_path / "many", "mode=images", f"n={n}", "batch_size=5", "seed=5"))
    names = [f"{i:06d}.png" for i in range(n)]
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == names
    for name in names:  # the same latent per image; a batch of another size may round a value apart
        assert np.abs(pixels(tmp_path / "many" / name).astype(int) - pixels(tmp_path / "one" / name)).max() <= 1
    assert f"Writing {n} PNGs of 16px to {tmp_path / 'many'}: about" in caplog.text  # said before the rest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many", "one"]


def test_slerp_endpoints_and_norm():
    z = latents(6, 100, 0)
    z0, z1 = z[:3], z[3:]
    assert torch.equal(slerp(z0, z1, 0.0), z0)
    assert torch.allclose(slerp(z0, z1, 1.0), z1, atol=1e-6)
    mid = slerp(z0, z1, 0.5).flatten(1).norm(dim=1)
    lerp_mid = ((z0 + z1) / 2).flatten(1).norm(dim=1)
    assert (mid > lerp_mid).all()  # the arc keeps the norm the straight line loses


def test_interpolation_rows_start_and_end_at_the_endpoint_samples(ckpt, tmp_path):
    rows, steps, seed = 3, 5, 7
    out = sample(sample_cfg(ckpt, tmp_path / "interp.png", "mode=interpolate", f"rows={rows}",
                            f"steps={steps}", f"seed={seed}"))["out"]
    grid = pixels(out)
    assert grid.shape[:2] == (PAD + rows * (16 + PAD), PAD + steps * (16 + PAD))
    gan, _ = load_gan(ckpt)
    ends = as_uint8(generate(gan, latents(2 * rows, gan.generator.nz, seed)))  # z0 rows, then z1 rows
    for r in range(rows):
        assert np.abs(tile(grid, r, 0).astype(int) - ends[r]).max() <= 1
        assert np.abs(tile(grid, r, steps - 1).astype(int) - ends[rows + r]).max() <= 1
        assert not np.array_equal(tile(grid, r, 0), tile(grid, r, steps // 2))


def caption_height(img: np.ndarray, grid_height: int) -> int:
    """Height of the caption strip above a grid: white, with dark text in it."""
    height = img.shape[0] - grid_height
    assert height > 0 and (img[:height] < 100).any() and (img[:height] > 250).mean() > 0.5
    return height


def test_progress_gif_has_one_captioned_frame_per_epoch(ckpt, run, tmp_path):
    out = sample(sample_cfg(ckpt, tmp_path / "progress.gif", "mode=progress"))["out"]
    grid = pixels(run / "samples" / "epoch_0001.png")
    with Image.open(out) as gif:
        assert gif.n_frames == EPOCHS
        assert gif.info["loop"] == 0
        frames = []
        for i in range(EPOCHS):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB")))
    assert frames[0].shape[1] == grid.shape[1]
    h = caption_height(frames[0], grid.shape[0])
    assert not np.array_equal(frames[0][:h], frames[1][:h])  # "epoch 0", "epoch 1"
    # From the run directory alone, without a checkpoint.
    out2 = sample(sample_cfg(None, tmp_path / "p2.gif", "mode=progress", f"progress.run={run}"))["out"]
    assert Image.open(out2).n_frames == EPOCHS
    with pytest.raises(UserError, match="No progress grids"):
        sample(sample_cfg(None, tmp_path / "p3.gif", "mode=progress", f"progress.run={tmp_path}"))


def test_compare_puts_real_images_left_of_generated_ones_and_says_so(ckpt, tmp_path):
    out = sample(sample_cfg(ckpt, tmp_path / "compare.png", "mode=compare", "n=8", "nrow=4", "seed=1"))["out"]
    img = pixels(out)
    side = PAD + 4 * (16 + PAD)
    assert img.shape[1] == 2 * side + 8
    h = caption_height(img, PAD + 2 * (16 + PAD))
    # One label over each half ("real (train)", "generated"), and they differ.
    assert (img[:h, :side] < 100).any() and (img[:h, side + 8:] < 100).any()
    assert not np.array_equal(img[:h, :side], img[:h, side + 8:])
    img = img[h:]
    gan, config = load_gan(ckpt)
    fake = as_uint8(generate(gan, latents(8, gan.generator.nz, 1)))
    assert np.abs(tile(img[:, side + 8:], 0, 0).astype(int) - fake[0]).max() <= 1
    # The left half holds real synthetic faces, which the right half (a 2-epoch generator) does not match.
    assert not np.array_equal(img[:, :side], img[:, side + 8:])
    assert (img[:, side:side + 8] == 255).all()


CLASSIFIER = {"max_train": 1000, "max_eval": 400, "epochs": 3, "batch_size": 64, "lr": 2e-3, "width": 16}


@pytest.fixture(scope="module")
def classifier_cache(ckpt, tmp_path_factory) -> tuple[Path, dict]:
    """A cache directory holding the run's attribute classifier, trained once for the module."""
    cache = tmp_path_factory.mktemp("attr_cache")
    _, config = load_gan(ckpt)
    _, record = cached_classifier(config["data"], cache, CLASSIFIER, read=real_subset)
    return cache, record


def test_attribute_classifier_beats_the_majority_guess_and_is_cached(ckpt, classifier_cache):
    cache, record = classifier_cache
    assert record["path"].is_file() and record["path"].parent == cache and record["num_eval"] == 400
    for name in ("Smiling", "Black_Hair", "Blond_Hair"):
        assert record["accuracy"][name] > record["majority"][name] + 0.05, (name, record["accuracy"])
    mtime = record["path"].stat().st_mtime_ns
    _, config = load_gan(ckpt)
    clf, record2 = cached_classifier(config["data"], cache, CLASSIFIER, read=real_subset)
    assert record2["path"] == record["path"] and record2["path"].stat().st_mtime_ns == mtime  # read back
    assert record2["accuracy"] == record["accuracy"]
    # Another dataset (image size) or other classifier settings get their own cache entry.
    tiny = {**CLASSIFIER, "max_train": 64, "max_eval": 64, "epochs": 1}
    _, record3 = cached_classifier({**config["data"], "img_size": 32}, cache, tiny, read=real_subset)
    _, record4 = cached_classifier(config["data"], cache, tiny, read=real_subset)
    assert len({record["path"], record3["path"], record4["path"]}) == 3
    assert not list(cache.glob(".*tmp*"))


@pytest.mark.parametrize("attribute", ["Smiling", "Black_Hair"])
def test_moving_along_an_attribute_direction_raises_its_score(ckpt, tmp_path, classifier_cache, attribute):
    cache, _ = classifier_cache
    settings = [f"direction.classifier.{k}={v}" for k, v in CLASSIFIER.items()]
    cfg = sample_cfg(ckpt, tmp_path / "attr.png", "mode=attributes", f"direction.attribute={attribute}",
                     "rows=4", "steps=5", "direction.num_latents=400", f"direction.cache_dir={cache}",
                     "seed=0", *settings)
    result = sample(cfg)
    img = pixels(result["out"])
    assert img.shape[1] == PAD + 5 * (16 + PAD)
    h = caption_height(img, PAD + 4 * (16 + PAD))
    for col in range(5):  # each column's strength, -2 ... +2, centred over it
        x = PAD + col * (16 + PAD)
        assert (img[:h, x:x + 16] < 100).any(), col
    assert result["scores"][-1] > result["scores"][0]
    # On latents the direction was not fitted on: +1 direction raises the mean score.
    gan, config = load_gan(ckpt)
    clf, record = cached_classifier(config["data"], cache, CLASSIFIER, read=real_subset)
    index = record["attr_names"].index(attribute)
    z = latents(300, gan.generator.nz, seed=12345)
    moved = edit_latents(z, result["direction"], torch.tensor([0.0, 1.0])).view(300, 2, -1, 1, 1)
    before = attribute_scores(clf, generate(gan, moved[:, 0]), index)
    after = attribute_scores(clf, generate(gan, moved[:, 1]), index)
    assert after.mean() > before.mean()


def test_unknown_attribute_is_a_clear_error(ckpt, tmp_path, classifier_cache):
    cache, _ = classifier_cache
    settings = [f"direction.classifier.{k}={v}" for k, v in CLASSIFIER.items()]
    with pytest.raises(UserError, match="Smiling"):  # the message lists the attributes there are
        sample(sample_cfg(ckpt, tmp_path / "a.png", "mode=attributes", "direction.attribute=Wings",
                          f"direction.cache_dir={cache}", *settings))


def bad_checkpoint(kind: str, ckpt: Path, tmp: Path) -> Path:
    """A file that is not a checkpoint celebgan can sample from, of one kind."""
    path = tmp / f"{kind}.ckpt"
    if kind == "text":
        path.write_text("not a checkpoint")
    elif kind == "foreign":  # a PyTorch checkpoint without a celebgan run config
        torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    elif kind in ("other_model", "not_a_gan"):
        full = torch.load(ckpt, map_location="cpu", weights_only=True)
        if kind == "other_model":  # weights that do not fit the model its config describes
            full["celebgan_config"]["model"]["generator"]["ngf"] = 32
        else:  # an allowed target, but not a GAN
            full["celebgan_config"]["model"]["_target_"] = "celebgan.gan.networks.Generator"
        torch.save(full, path)
    return path  # "missing": never written


READERS = {
    "load_gan": lambda path: load_gan(path),
    "load_generator": lambda path: celebgan.load_generator(path, device="cpu"),
    "evaluate": lambda path: evaluate(eval_cfg(f"ckpt={path}")),
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("kind, message", [
    ("text", "is not a PyTorch checkpoint: torch.save writes a zip archive, and this file is not one"),
    ("missing", "not found"),
    ("foreign", "not written by celebgan.train"),
    ("other_model", "do not fit the model"),
    ("not_a_gan", "not celebgan's GAN"),
])
def test_a_file_that_is_not_a_celebgan_checkpoint_is_one_clear_error(ckpt, tmp_path, reader, kind, message):
    # From the command line (exit status 2, one message): tests/test_cli_errors.py's table.
    with pytest.raises(UserError, match=message):
        READERS[reader](bad_checkpoint(kind, ckpt, tmp_path))


def test_a_checkpoint_of_another_image_size_is_one_clear_error(ckpt):
    with pytest.raises(UserError, match="trained on 16px images, but 64px"):
        load_gan(ckpt, img_size=64)


def test_lightning_load_from_checkpoint_names_the_public_loader(ckpt):
    with pytest.raises(TypeError, match=r"generator, discriminator, g_optimizer, d_optimizer.*load_gan\(path\)"):
        GAN.load_from_checkpoint(ckpt)
    # Given the objects the config builds, Lightning's loader restores the same weights.
    gan, config = load_gan(ckpt)
    fresh = {name: hydra.utils.instantiate(config["model"][name]) for name in ("generator", "discriminator")}
    assert not torch.equal(fresh["generator"].main[0].weight, gan.generator.main[0].weight)
    loaded = GAN.load_from_checkpoint(ckpt, map_location="cpu", g_optimizer=torch.optim.Adam,
                                      d_optimizer=torch.optim.Adam, **fresh)
    assert loaded.state_dict().keys() == gan.state_dict().keys()
    assert all(torch.equal(v, gan.state_dict()[k]) for k, v in loaded.state_dict().items())


@pytest.mark.integration
def test_command_lines_write_out_and_nothing_else_and_a_mistake_nothing_at_all(ckpt, tmp_path):
    mistake, works = tmp_path / "mistake", tmp_path / "works"
    mistake.mkdir()
    works.mkdir()
    error, written, help_ = run_commands([
        ("celebgan.sample", [f"ckpt={ckpt}", "img_size=32", f"out={mistake / 'g.png'}"]),
        ("celebgan.sample", [f"ckpt={ckpt}", "n=4", "device=cpu", f"out={works / 'g.png'}"]),
        ("celebgan.sample", ["--help"])], tmp_path)
    assert error["code"] == 2
    assert "trained on 16px images, but 32px" in error["output"] and "Traceback" not in error["output"]
    assert not list(mistake.iterdir())  # no image, no outputs/sample/<time>_<mode>/ folder
    assert written["code"] == 0, written["output"]
    assert [p.name for p in works.iterdir()] == ["g.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mistake", "works"]
    assert "attributes" in help_["output"] and "Configuration groups" not in help_["output"]  # no training groups


def test_default_out_is_a_new_folder_per_call(ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="sample", overrides=[f"ckpt={ckpt}", "n=4", "device=cpu"])
    out = sample(cfg)["out"]
    assert out.parent.parent == Path("outputs/sample") and out.parent.name.endswith("_grid")
    assert [p.name for p in out.parent.iterdir()] == ["grid.png"]


def test_the_attribute_classifier_says_what_it_trains_and_how_long_before_it_trains(ckpt, tmp_path, caplog):
    _, config = load_gan(ckpt)
    tiny = {**CLASSIFIER, "max_train": 96, "max_eval": 32, "epochs": 2, "batch_size": 8}
    with caplog.at_level(logging.INFO, logger="celebgan.metrics.judge"):
        _, record = cached_classifier(config["data"], tmp_path, tiny, read=real_subset)
    lines = [r.getMessage() for r in caplog.records]
    first = next(i for i, line in enumerate(lines) if line.startswith("Training the attribute classifier first"))
    assert "Up to 96 real images for 2 epoch(s)" in lines[first] and str(record["path"]) in lines[first]
    assert lines[first + 1].startswith("Attribute classifier: training a small CNN (width 16) on 96 labelled images")
    assert "so about " in lines[first + 2] and "(an estimate)" in lines[first + 2]  # from its first 5 batches
    assert lines[-2].startswith("Attribute classifier: 192/192 images trained")  # the last progress line
    # Then what it took and how well it does on held-out faces, every attribute by name.
    assert lines[-1].startswith("Attribute classifier: trained in ") and "Smiling" in lines[-1]
    assert set(record["balanced"]) == set(record["attr_names"]) and record["recipe"] == RECIPE_VERSION
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="celebgan.metrics.judge"):
        cached_classifier(config["data"], tmp_path, tiny, read=real_subset)  # read from the cache: nothing to announce
    assert not any("classifier" in r.getMessage() for r in caplog.records)


def test_classifier_progress_lines_come_at_most_every_interval(monkeypatch, caplog):
    import celebgan.metrics.judge as attributes

    clock = iter(range(0, 1000, 10))  # each batch takes 10 s
    monkeypatch.setattr(attributes.time, "monotonic", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="celebgan.metrics.judge"):
        progress = attributes.TrainingProgress(100 * 12, first_batches=3, every_s=30)
        for _ in range(12):
            progress.step(100)
    lines = [r.getMessage() for r in caplog.records]
    # batches 2-3 ran at 10 images/s: 900 images left (90 s) + 20 s so far; then a line every 30 s and at the end
    assert lines[0] == ("Attribute classifier: 10 images/s on its first batches, so about 2 min for its "
                        "training (an estimate)")
    assert [line.split(" images trained")[0].rsplit(" ", 1)[1] for line in lines[1:]] == \
        ["600/1200", "900/1200", "1200/1200"]
