"""The stabilisers as config deltas: instance noise, spatial dropout, hinge loss, TTUR, LR decay."""
from pathlib import Path

import hydra
import pytest
import torch
from events import scalars
from torch import nn

from celebgan.plot import read_scalars
from celebgan.train import train


def test_instance_noise_std_anneals_linearly_to_zero(make_cfg):
    gan = hydra.utils.instantiate(make_cfg("model.instance_noise=0.2", "model.instance_noise_steps=100").model)
    assert [gan.instance_noise_std(s) for s in (0, 50, 100, 150)] == pytest.approx([0.2, 0.1, 0.0, 0.0])
    images = torch.zeros(2, 3, 4, 4)
    assert gan.noisy(images, 0.1).std() > 0
    state = torch.random.get_rng_state()
    assert gan.noisy(images, 0.0) is images  # off: no noise and no RNG draw
    assert torch.equal(state, torch.random.get_rng_state())
    vanilla = hydra.utils.instantiate(make_cfg().model)
    assert vanilla.instance_noise_std(0) == 0.0


def test_instance_noise_reaches_both_d_inputs_during_training(make_cfg, monkeypatch):
    # The regularized preset (instance noise with spectral norm, dropout and label smoothing) trains.
    cfg = make_cfg("model=regularized", "model.instance_noise=0.5", "model.instance_noise_steps=4")
    seen = []

    def record(module, args):
        seen.append(args[0].detach().clone())

    original = hydra.utils.instantiate

    def instantiate_with_hook(config, *args, **kwargs):
        obj = original(config, *args, **kwargs)
        if hasattr(obj, "discriminator") and not seen:
            obj.discriminator.register_forward_pre_hook(record)
        return obj

    monkeypatch.setattr(hydra.utils, "instantiate", instantiate_with_hook)
    train(cfg)
    # Three D calls per step (real, fake for D, fake for G); 4 steps.
    assert len(seen) == 12
    real_0, fake_0 = seen[0], seen[1]
    # Real images are 8-bit values in [-1, 1] and fakes come out of tanh: noise leaves both ranges.
    assert real_0.abs().max() > 1.0 and fake_0.abs().max() > 1.0
    on_grid = torch.isclose((real_0 + 1) * 127.5, ((real_0 + 1) * 127.5).round(), atol=1e-3)
    assert on_grid.float().mean() < 0.05
    stds = [e.value for e in scalars(cfg.paths.output_dir, "train/instance_noise_std")]
    assert stds == pytest.approx([0.5, 0.375, 0.25, 0.125])


def test_regularized_preset_combines_the_seed_project_regularisers(make_cfg):
    cfg = make_cfg("model=regularized")
    gan = hydra.utils.instantiate(cfg.model)
    d_dropouts = [m for m in gan.discriminator.modules() if isinstance(m, nn.Dropout2d)]
    assert d_dropouts and all(m.p == 0.2 for m in d_dropouts)
    assert not [m for m in gan.generator.modules() if isinstance(m, (nn.Dropout, nn.Dropout2d))]
    assert gan.d_loss_fn.keywords == {"real_label": 0.9} and gan.instance_noise > 0
    assert gan.generator.nz == 128
    assert all(hasattr(m, "parametrizations") for m in gan.discriminator.modules() if isinstance(m, nn.Conv2d))
    g_opt, d_opt = gan.configure_optimizers()
    assert (g_opt.param_groups[0]["lr"], d_opt.param_groups[0]["lr"]) == (1e-4, 4e-4)
    # Dropout acts in training mode only.
    x = torch.randn(4, 3, 16, 16)
    gan.discriminator.train()
    assert not torch.equal(gan.discriminator(x), gan.discriminator(x))
    gan.discriminator.eval()
    assert torch.equal(gan.discriminator(x), gan.discriminator(x))


def test_ttur_preset_gives_each_optimizer_its_own_learning_rate(make_cfg):
    gan = hydra.utils.instantiate(make_cfg("model=ttur").model)
    g_opt, d_opt = gan.configure_optimizers()
    assert g_opt.param_groups[0]["lr"] == 1e-4 and d_opt.param_groups[0]["lr"] == 4e-4
    assert all(p in {id(q) for q in gan.generator.parameters()} for p in map(id, g_opt.param_groups[0]["params"]))


# Each preset's keys and values: test_config.py's test_each_preset_is_vanilla_plus_what_its_file_sets.
# Training with them: the hinge objective in test_objectives.py, TTUR with the LR schedules below,
# regularized in the instance-noise test above.


@pytest.mark.parametrize("schedule, factor", [("step", 0.25), ("linear", 0.0)])  # after 2 epochs of 2 steps
def test_lr_schedule_steps_per_training_step_and_is_kept_in_the_checkpoint(make_cfg, schedule, factor):
    extra = ["model.lr_scheduler.step_size=2"] if schedule == "step" else []
    cfg = make_cfg("trainer.max_epochs=2", f"lr_schedule={schedule}", "model=ttur", "data.num_images=32", *extra)
    train(cfg)
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=True)
    g_lr, d_lr = (s["param_groups"][0]["lr"] for s in ckpt["optimizer_states"])
    assert g_lr == pytest.approx(1e-4 * factor) and d_lr == pytest.approx(4e-4 * factor)
    assert [s["last_epoch"] for s in ckpt["lr_schedulers"]] == [4, 4]  # once per training step


def test_linear_schedule_reaches_zero_where_max_steps_ends_the_run(make_cfg):
    # max_epochs alone would last 100 epochs of 2 steps: the decay follows the run's real length, 3 steps.
    cfg = make_cfg("trainer.max_epochs=100", "trainer.max_steps=3", "lr_schedule=linear", "data.num_images=32")
    train(cfg)
    lrs = [v for _, v in read_scalars(cfg.paths.output_dir)["train/lr_g"]]
    assert lrs == pytest.approx([2e-4, 2e-4 * 2 / 3, 2e-4 / 3])  # what steps 1, 2, 3 used: 0 after the last
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert [s["param_groups"][0]["lr"] for s in ckpt["optimizer_states"]] == pytest.approx([0.0, 0.0])


def test_no_lr_schedule_by_default(make_cfg):
    gan = hydra.utils.instantiate(make_cfg().model)
    assert gan.lr_scheduler is None and len(gan.configure_optimizers()) == 2
