"""Every file celebgan writes goes through io.atomic_write: when the write fails (here the final
rename hits a full disk), the error names the file, no temporary is left behind, and whatever was
at the target before is untouched."""
import errno
import importlib.util
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from celebgan import evaluate, plot, sample
from celebgan.metrics import judge
from celebgan.data import prepared as prepare
from celebgan.run.callbacks import SampleGrid
from celebgan.run.checkpoint import AtomicCheckpointIO
from celebgan.data.modules import SyntheticDataModule
from celebgan.errors import UserError
from celebgan.metrics.feature_cache import RealFeatureCache
from celebgan.metrics.features import RandomFeatures
from celebgan.gan.images import save_png

ROOT = Path(__file__).resolve().parents[1]
OLD = b"previous content"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TinyGAN:
    generator = SimpleNamespace(nz=4)
    generator_ema = None
    steps_done = 0
    img_size = 8
    fixed_z = torch.zeros(4, 4, 1, 1)
    attr_names: list[str] = []  # unconditional
    attr_frequencies = torch.zeros(0)
    label_table = None  # unconditional: no training label table
    fixed_labels = torch.zeros(4, 0)
    conditional = False

    def sample(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.zeros(len(z), 3, 8, 8)


# Each case: (tmp_path, monkeypatch) -> (the target path, a call that writes it).
def sample_grid(tmp, mp):
    trainer = SimpleNamespace(current_epoch=0, is_global_zero=True, loggers=[])
    return tmp / "epoch_0001.png", lambda: SampleGrid(dirpath=str(tmp)).on_train_epoch_end(trainer, TinyGAN())


def checkpoint(tmp, mp):
    return tmp / "last.ckpt", lambda: AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, tmp / "last.ckpt")


def png(tmp, mp):
    return tmp / "grid.png", lambda: save_png(torch.zeros(3, 8, 8), tmp / "grid.png")


def image_folder(tmp, mp):
    return tmp / "images", lambda: sample.write_images(TinyGAN(), tmp / "images", n=3, seed=0, batch_size=2)


def progress_gif(tmp, mp):
    (tmp / "run" / "samples").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (8, 8)).save(tmp / "run" / "samples" / f"epoch_{i:04d}.png")
    return tmp / "progress.gif", lambda: sample.write_progress(tmp / "run", tmp / "progress.gif", 100)


def training_curves(tmp, mp):
    mp.setattr(plot, "read_scalars", lambda run: {tag: [(0, 0.5), (1, 0.4)] for _, _, series in plot.PANELS
                                                 for tag, _, _ in series})
    return tmp / "curves.png", lambda: plot.plot_run(tmp, tmp / "curves.png")


def feature_cache(tmp, mp):
    dm = SyntheticDataModule(img_size=16, num_images=8, batch_size=4, num_workers=0)
    cache = RealFeatureCache(tmp)
    extractor = RandomFeatures(num_features=8)
    target = cache.path({**dm.fingerprint("test", 8), "extractor": extractor.name})
    return target, lambda: cache.get(dm, "test", 8, extractor, batch_size=4)


def classifier_cache(tmp, mp):
    mp.setattr(judge, "train_classifier", lambda data_config, read, device, **settings: {"attr_names": ["a"]})
    data_config, settings = {"_target_": "x"}, {"width": 4}
    target = tmp / f"attr_classifier_{judge.fingerprint(data_config, settings)}.pt"
    return target, lambda: judge.cached_classifier(data_config, tmp, settings, read=None)


def evaluation_json(tmp, mp):
    return tmp / "last.eval.json", lambda: evaluate.write_results({"fid": 1.0}, tmp / "last.eval.json")


def quality_results(tmp, mp):
    quality, results = load_script("quality"), load_script("results")
    return tmp / "RESULTS.md", lambda: results.write_section(tmp / "RESULTS.md", f"{quality.SECTION}\nnew\n")


def throughput_results(tmp, mp):
    throughput = load_script("throughput")
    mp.setattr(throughput, "HERE", tmp)
    return tmp / "RESULTS.md", lambda: throughput.write_results("new")


def prepared_record(tmp, mp, celeba_root):
    source = prepare.source_of(celeba_root, "train", "full", 8)
    record = prepare.record_path(tmp / "prepared", source)
    return record, lambda: prepare.build(source, tmp / "prepared", workers=1, progress=False)


WRITERS = [sample_grid, checkpoint, png, image_folder, progress_gif, training_curves, feature_cache,
           classifier_cache, evaluation_json, quality_results, throughput_results, prepared_record]


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__)
def test_a_failed_write_names_the_file_leaves_no_temporary_and_keeps_the_old_file(
        writer, tmp_path, monkeypatch, request):
    work = tmp_path / "work"
    work.mkdir()
    extra = [request.getfixturevalue("celeba_root")] if writer is prepared_record else []
    target, write = writer(work, monkeypatch, *extra)
    folder = writer is image_folder  # write_images refuses an existing folder, so there is none before
    if not folder:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(OLD)
    real_replace = os.replace

    def full_disk(src, dst):
        if Path(dst).name == target.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(UserError, match="No space left on device") as err:
        write()
    assert target.name in str(err.value)
    assert [p for p in work.rglob("*") if ".tmp" in p.name] == []
    if folder:
        assert not target.exists()
    else:
        assert target.read_bytes() == OLD
