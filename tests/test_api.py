"""The Python API: celebgan.load_generator(ckpt).sample(n, seed=...)."""
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

import celebgan
from celebgan.devices import pick_device
from celebgan.errors import UserError
from celebgan.run.checkpoint import load_gan
from celebgan.gan.images import latents


@pytest.fixture(scope="module")
def ckpt(trained_run) -> Path:
    return trained_run.ckpt


def test_sample_gives_the_ema_generators_images_in_unit_range(ckpt):
    G = celebgan.load_generator(ckpt, device="cpu")
    images = G.sample(5, seed=3)
    assert images.shape == (5, 3, 16, 16) and images.dtype == torch.float32 and images.device.type == "cpu"
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0
    gan, _ = load_gan(ckpt)
    expected = (gan.generator_ema.eval()(latents(5, gan.generator.nz, 3)) + 1) / 2  # EMA weights, eval mode
    torch.testing.assert_close(images, expected.clamp(0, 1))
    assert not G.network.training and not any(p.requires_grad for p in G.network.parameters())


def test_a_seed_gives_the_same_images_and_none_new_ones(ckpt):
    G = celebgan.load_generator(ckpt, device="cpu")
    assert torch.equal(G.sample(4, seed=0), G.sample(4, seed=0))
    # The batch size does not change the images (up to float rounding of other batch shapes).
    torch.testing.assert_close(G.sample(4, seed=0, batch_size=3), G.sample(4, seed=0))
    assert (G.sample(4) - G.sample(4)).abs().max() > 1e-4


def test_pil_images_and_run_config(ckpt):
    G = celebgan.load_generator(ckpt)
    faces = G.sample(2, seed=0, pil=True)
    assert len(faces) == 2 and all(isinstance(f, Image.Image) and f.size == (16, 16) for f in faces)
    assert G.config["data"]["img_size"] == G.img_size == 16 and G.nz == 100
    assert G.device.type in ("cpu", "cuda", "mps")


def test_auto_device_is_the_cpu_without_a_gpu(ckpt, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == pick_device() == torch.device("cpu")
    assert celebgan.load_generator(ckpt).device == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # CUDA first, then MPS
    assert pick_device("auto") == torch.device("mps") and pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("auto") == torch.device("cuda") and pick_device("cuda:1") == torch.device("cuda", 1)


def test_a_device_this_machine_lacks_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for name, message in (("cuda", "device=cuda needs a CUDA GPU, and torch sees none"),
                          ("mps", "device=mps needs Apple's MPS"), ("quantum", "device='quantum' is not a device"),
                          ("meta", "device='meta' is not a device celebgan runs on")):
        with pytest.raises(UserError, match=re.escape(message)):
            pick_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError, match=re.escape("device=cuda:2: this machine has 2 CUDA GPU(s), cuda:0 to cuda:1")):
        pick_device("cuda:2")


# A file that is not a checkpoint, through load_generator and the other readers:
# test_sample.py's test_a_file_that_is_not_a_celebgan_checkpoint_is_one_clear_error.
