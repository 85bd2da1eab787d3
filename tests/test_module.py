"""The training step itself: call order, label target, one G forward, which networks move."""
import pytest
import torch
from conftest import fit_steps

from celebgan.errors import UserError


def test_d_sees_a_real_batch_then_a_separate_fake_batch_then_g_step(make_cfg):
    calls = []

    def hook(gan):
        gan.discriminator.register_forward_hook(lambda m, inp, out: calls.append(("D", inp[0].shape[0], inp[0].requires_grad)))
        gan.generator.register_forward_hook(lambda m, inp, out: calls.append(("G", inp[0].shape[0], None)))

    _, trainer = fit_steps(make_cfg(), 1, on_start=hook)
    # One G forward, reused: D(real), D(fake.detach()) for the D step, D(fake) for the G step.
    assert calls == [("G", 16, None), ("D", 16, False), ("D", 16, False), ("D", 16, True)]
    assert trainer.global_step == 2  # one training step = two optimizer steps


@pytest.mark.parametrize("real_label", [1.0, 0.9])
def test_real_label_reaches_the_d_loss(make_cfg, real_label):
    seen = []

    def record(gan):
        loss = gan.d_loss_fn
        gan.d_loss_fn = lambda r, f: seen.append(loss.keywords["real_label"]) or loss(r, f)

    fit_steps(make_cfg(f"model.d_loss.real_label={real_label}"), 1, on_start=record)
    assert seen == [real_label]


def test_zero_learning_rate_freezes_only_that_network(make_cfg):
    start = {}

    def keep(gan):
        start["d"] = {k: v.clone() for k, v in gan.discriminator.state_dict().items()
                      if "running" not in k and "num_batches" not in k}
        start["g"] = {k: v.clone() for k, v in gan.generator.state_dict().items()}

    gan, _ = fit_steps(make_cfg("model.d_optimizer.lr=0.0"), 2, on_start=keep)
    d1, g1 = gan.discriminator.state_dict(), gan.generator.state_dict()
    assert all(torch.equal(start["d"][k], d1[k]) for k in start["d"])
    assert not torch.equal(start["g"]["main.0.weight"], g1["main.0.weight"])


def test_fixed_latents_are_a_buffer_drawn_once(make_cfg):
    start = {}
    gan, _ = fit_steps(make_cfg(), 2, on_start=lambda gan: start.update(z=gan.fixed_z.clone()))
    assert "fixed_z" in gan.state_dict()
    assert torch.equal(gan.fixed_z, start["z"])
    samples = gan.sample(gan.fixed_z)
    assert samples.shape == (16, 3, 16, 16) and torch.equal(samples, gan.sample(gan.fixed_z))  # eval mode


def test_bad_model_values_are_clear_errors(make_cfg):
    from celebgan.train import instantiate

    with pytest.raises(UserError, match="model.n_dis=0"):
        instantiate(make_cfg("model.n_dis=0").model)
    with pytest.raises(UserError, match=r"model.augment=\['colour'\].*unknown DiffAugment op"):
        instantiate(make_cfg("model.augment=[colour]").model)
    with pytest.raises(UserError, match=r"model.d_loss.real_label=1.5 must lie in \(0, 1\]"):
        instantiate(make_cfg("model.d_loss.real_label=1.5").model)
    with pytest.raises(UserError, match="model.instance_noise"):
        instantiate(make_cfg("model.instance_noise=0.1").model)
