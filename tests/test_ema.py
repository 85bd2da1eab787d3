"""The generator EMA: its arithmetic, ramp-up, BatchNorm buffers, and that it never alters training."""
from pathlib import Path

import torch

from celebgan.gan.module import GAN
from celebgan.gan.networks import Discriminator, Generator
from celebgan.train import train


def make_gan(**kwargs) -> GAN:
    return GAN(generator=Generator(img_size=16, ngf=8, nz=8), discriminator=Discriminator(img_size=16, ndf=8),
               g_optimizer=torch.optim.Adam, d_optimizer=torch.optim.Adam, **kwargs)


def fill(module, value: float) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(value)


def test_ema_moves_half_way_per_half_life():
    gan = make_gan(ema_half_life=100, ema_rampup=None)
    fill(gan.generator, 1.0)
    fill(gan.generator_ema, 0.0)
    gan.update_ema(batch_images=100, images_seen=10**6)  # one half-life: beta = 0.5
    assert all(torch.allclose(p, torch.full_like(p, 0.5)) for p in gan.generator_ema.parameters())
    gan.update_ema(batch_images=50, images_seen=10**6)  # half a half-life: beta = 0.5 ** 0.5
    expected = 1.0 - 0.5 * 0.5 ** 0.5
    assert all(torch.allclose(p, torch.full_like(p, expected)) for p in gan.generator_ema.parameters())
    assert all(torch.equal(p, torch.ones_like(p)) for p in gan.generator.parameters())  # G untouched


def test_rampup_caps_the_half_life_early_in_training():
    gan = make_gan(ema_half_life=10_000, ema_rampup=0.05)
    fill(gan.generator, 1.0)
    fill(gan.generator_ema, 0.0)
    gan.update_ema(batch_images=50, images_seen=1000)  # half-life min(10000, 0.05 * 1000) = 50
    assert all(torch.allclose(p, torch.full_like(p, 0.5)) for p in gan.generator_ema.parameters())


def test_batchnorm_buffers_are_copied_not_averaged():
    gan = make_gan(ema_half_life=10_000, ema_rampup=None)
    bn = gan.generator.main[1]
    bn.running_mean.fill_(3.0)
    bn.num_batches_tracked.fill_(7)
    gan.update_ema(batch_images=1, images_seen=10**6)
    ema_bn = gan.generator_ema.main[1]
    assert torch.equal(ema_bn.running_mean, bn.running_mean)
    assert ema_bn.num_batches_tracked.item() == 7


def test_sample_uses_the_ema_in_eval_mode_and_restores_modes():
    gan = make_gan(ema_half_life=100)
    fill(gan.generator_ema, 0.01)
    gan.generator_ema.train()
    z = torch.randn(4, 8)
    out = gan.sample(z)
    assert gan.generator_ema.training  # mode restored
    assert torch.equal(out, gan.generator_ema.eval()(z))
    assert not torch.allclose(out, gan.generator.eval()(z))


def test_ema_off_samples_from_g_and_saves_no_copy():
    gan = make_gan(ema_half_life=0)
    assert gan.generator_ema is None and gan.sampler is gan.generator
    assert not [k for k in gan.state_dict() if k.startswith("generator_ema.")]
    gan.update_ema(batch_images=16, images_seen=16)  # a no-op, not an error
    z = torch.randn(3, 8)
    assert torch.equal(gan.sample(z), gan.generator.eval()(z))


def test_ema_never_changes_the_training_run(make_cfg, trained_run):
    cfg = make_cfg("trainer.max_epochs=2", "model.ema_half_life=0")  # the trained run without its EMA
    train(cfg)
    runs = {name: torch.load(path, map_location="cpu", weights_only=True)["state_dict"] for name, path in
            [("ema", trained_run.ckpt), ("no_ema", Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")]}
    plain = runs["no_ema"]
    assert not [k for k in plain if k.startswith("generator_ema.")]
    for name, tensor in plain.items():
        assert torch.equal(tensor, runs["ema"][name]), name
    # ... while the EMA itself did average: it differs from G after 8 steps at half-life 10k images.
    assert not torch.equal(runs["ema"]["generator_ema.main.0.weight"], runs["ema"]["generator.main.0.weight"])
