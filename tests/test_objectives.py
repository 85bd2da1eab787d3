"""Objectives, penalties, DiffAugment and n_dis inside the training step, and composed with the rest."""
import copy
import subprocess
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from conftest import CONF_DIR, TINY_CLI, cli_cmd, cli_env, fit_steps, run_commands

from celebgan.gan import losses

LOSS_FILES = sorted(p.stem for p in (Path(CONF_DIR) / "model" / "loss").glob("*.yaml"))
# Every new term at once: a G loss that reads D(real), two lazy penalties, augmentation, 2 D steps per G step.
EVERYTHING = ["model/loss=rpgan", "model/penalty=[r1,r2]", "model.penalties.r1.every=2",
              "model.augment=[color,translation,cutout]", "model.n_dis=2"]


def fit(make_cfg, steps: int, *overrides: str, callbacks=()):
    """steps training steps in batches of 8: 8 steps an epoch, so the batch index counts the steps."""
    return fit_steps(make_cfg("data.batch_size=8", *overrides), steps, callbacks=callbacks)


def test_every_loss_file_names_its_own_pair_of_functions(make_cfg):
    assert {"bce", "minimax", "lsgan", "wgan", "hinge", "rpgan"} <= set(LOSS_FILES)
    for name in LOSS_FILES:
        gan = hydra.utils.instantiate(make_cfg(f"model/loss={name}").model)
        expected_g = {"bce": "g_nonsaturating"}.get(name, f"g_{name}")
        assert gan.d_loss_fn.func is getattr(losses, "d_bce" if name == "minimax" else f"d_{name}")
        assert gan.g_loss_fn.func is getattr(losses, expected_g)


class StepStart(L.Callback):
    """What the first training step starts from: its real batch, G's latents and fakes, and copies
    of G and D as they were before either moved."""

    def on_train_batch_start(self, trainer, gan, batch, batch_idx):
        if batch_idx == 0:
            self.real = batch[0].detach().clone()
            self.generator, self.discriminator = copy.deepcopy(gan.generator), copy.deepcopy(gan.discriminator)
            self.hook = gan.generator.register_forward_hook(self.keep)

    def keep(self, module, inputs, output):
        self.z, self.fake = inputs[0].detach().clone(), output.detach().clone()
        self.hook.remove()


# What one D step does to D's mean logits on the step's own real and fake batch, by each
# objective's formula (losses.py), from a fresh D whose logits sit near 0.
D_STEP = {
    "bce": "real up, fake down",      # softplus(-r) + softplus(f)
    "minimax": "real up, fake down",  # the same D loss
    "hinge": "real up, fake down",    # relu(1 - r) + relu(1 + f), both active near 0
    "wgan": "real up, fake down",     # f - r
    "lsgan": "real to 1, fake to 0",  # (r - 1)^2 + f^2
    "rpgan": "gap up",                # softplus(f - r): only the difference counts
}


@pytest.mark.parametrize("name", LOSS_FILES)
def test_one_step_moves_d_and_g_logits_as_each_objective_says(make_cfg, name):
    assert set(D_STEP) == set(LOSS_FILES)
    start = StepStart()
    # lr 1e-3: a step clearly above float noise; 1 training step = a D step, then a G step.
    gan, trainer = fit_steps(make_cfg(f"model/loss={name}", "model.d_optimizer.lr=1e-3",
                                      "model.g_optimizer.lr=1e-3"), 1, callbacks=[start])
    assert trainer.global_step == 2
    d_before, d_after, g_before, g_after = start.discriminator, gan.discriminator, start.generator, gan.generator
    with torch.no_grad():  # train mode, as in the step: BatchNorm normalises each batch by its own statistics
        assert torch.equal(g_before.train()(start.z), start.fake)
        real = d_before.train()(start.real), d_after.train()(start.real)
        fake = d_before(start.fake), d_after(start.fake)
        g_fake = d_after(start.fake), d_after(g_after.train()(start.z))
    if D_STEP[name] == "real up, fake down":
        assert real[1].mean() > real[0].mean() and fake[1].mean() < fake[0].mean()
    elif D_STEP[name] == "real to 1, fake to 0":
        assert (real[1] - 1).square().mean() < (real[0] - 1).square().mean()
        assert fake[1].square().mean() < fake[0].square().mean()
    assert (real[1] - fake[1]).mean() > (real[0] - fake[0]).mean()  # every objective: D separates more
    # The G step, against the updated D: G's new fakes score higher than the ones it started from.
    assert g_fake[1].mean() > g_fake[0].mean()


def test_relativistic_g_step_scores_the_real_batch_too(make_cfg):
    calls = []

    class Hook(L.Callback):
        def on_train_start(self, trainer, gan):
            gan.discriminator.register_forward_hook(lambda m, inp, out: calls.append(inp[0].requires_grad))

    fit(make_cfg, 1, "model/loss=rpgan", callbacks=[Hook()])
    # D step: real, fake.detach(); G step: fake (with grad to G), then real.
    assert calls == [False, False, True, False]


def test_n_dis_takes_that_many_d_steps_per_g_step(make_cfg):
    g_changes, d_changes = [], []

    class Watch(L.Callback):
        def on_train_batch_start(self, trainer, gan, batch, batch_idx):
            self.g = gan.generator.main[0].weight.clone()
            self.d = gan.discriminator.main[0].weight.clone()

        def on_train_batch_end(self, trainer, gan, outputs, batch, batch_idx):
            g_changes.append(not torch.equal(self.g, gan.generator.main[0].weight))
            d_changes.append(not torch.equal(self.d, gan.discriminator.main[0].weight))
            assert gan.steps_done == batch_idx + 1

    gan, trainer = fit(make_cfg, 6, "model.n_dis=3", callbacks=[Watch()])
    assert d_changes == [True] * 6
    assert g_changes == [False, False, True, False, False, True]
    assert trainer.global_step == 8  # 6 D steps + 2 G steps


def test_lazy_penalty_runs_every_k_steps_on_what_d_saw(make_cfg):
    seen = []

    class Hook(L.Callback):
        def on_train_start(self, trainer, gan):
            penalty = gan.penalties["r1"]
            gan.discriminator.register_forward_pre_hook(lambda m, args: seen.append(("D", args[0])))

            def record(d, real, fake):
                seen.append(("R1", real))
                return penalty(d, real, fake)

            record.every = penalty.every
            gan.penalties["r1"] = record

    fit(make_cfg, 4, "model/penalty=r1", "model.penalties.r1.every=2", "model.augment=[translation,cutout]",
        callbacks=[Hook()])
    r1_calls = [i for i, (who, _) in enumerate(seen) if who == "R1"]
    assert len(r1_calls) == 2  # steps 0 and 2 of 4
    for i in r1_calls:  # D step: D(real view), D(fake view), then R1 on that very real view
        assert seen[i - 2][0] == "D" and seen[i][1] is seen[i - 2][1]


class WeightSum:
    """A penalty whose gradient is known: d/dw sum(w) = 1 for D's first conv weight."""

    def __init__(self, every: int, scale: float):
        self.every, self.scale = every, scale

    def __call__(self, discriminator, real, fake):
        return self.scale * discriminator.main[0].weight.sum()


@pytest.mark.parametrize("every", [1, 4])
def test_lazy_penalty_is_scaled_by_its_interval(make_cfg, every):
    def first_d_weight_after_one_step(scale: float) -> torch.Tensor:
        class Inject(L.Callback):
            def on_train_start(self, trainer, gan):
                gan.penalties = {"w": WeightSum(every, scale)}

        gan, _ = fit(make_cfg, 1, "model.d_optimizer._target_=torch.optim.SGD", "~model.d_optimizer.betas",
                     "model.d_optimizer.lr=1.0", callbacks=[Inject()])
        return gan.discriminator.main[0].weight.detach()

    # SGD with lr 1: the penalty's share of the step is exactly every * scale * d sum(w)/dw = every * scale.
    delta = first_d_weight_after_one_step(0.0) - first_d_weight_after_one_step(0.5)
    assert torch.allclose(delta, torch.full_like(delta, every * 0.5), atol=1e-5)


def test_augment_reaches_every_d_input(make_cfg):
    inputs = []

    class Hook(L.Callback):
        def on_train_start(self, trainer, gan):
            gan.discriminator.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach()))

    fit(make_cfg, 1, "model.augment=[cutout]", callbacks=[Hook()])
    assert len(inputs) == 3  # D step real and fake, G step fake
    for x in inputs:  # cutout: a zeroed square of at least 2x2 (of 8x8 at most) in every image
        zero_px = (x == 0).all(1).flatten(1).sum(1)
        assert (zero_px >= 4).all() and (zero_px <= 64).all()


@pytest.mark.integration
def test_everything_at_once_is_exact_in_bf16_ema_and_resume(tmp_path):
    """The new terms compose with bf16-mixed, the EMA and exact resume, through the command line."""
    run_args = ["data.num_images=64", "data.batch_size=16", *EVERYTHING, "trainer.precision=bf16-mixed"]

    # The three command lines in one interpreter (run_commands), one after another.
    results = run_commands([("celebgan.train", [*TINY_CLI, *run_args, *extra]) for extra in [
        ["trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'straight'}"],
        ["trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'first'}"],
        ["trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'second'}",
         f"resume={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}"]]], tmp_path)
    for result in results:
        assert result["code"] == 0, result["output"][-3000:]
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(tmp_path / "first" / "checkpoints" / "last.ckpt", weights_only=True)
    assert straight["global_step"] == resumed["global_step"] == 8 + 4  # 8 D steps, 4 G steps
    for k, v in straight["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k
    ema = {k: v for k, v in straight["state_dict"].items() if k.startswith("generator_ema.") and "weight" in k}
    live = {k.replace("generator_ema.", "generator."): v for k, v in ema.items()}
    assert ema and any(not torch.equal(v, straight["state_dict"][k]) for k, v in live.items())


@pytest.mark.integration
def test_everything_at_once_under_two_process_ddp(tmp_path):
    # Plain "ddp" (find_unused_parameters=False) is what raised "unused parameters" with a GAN's two
    # backward passes; the module averages gradients itself, so it trains and the ranks agree, with
    # every new term and spectral norm in D too.
    run, probe = tmp_path / "run", tmp_path / "probe"
    result = subprocess.run(
        cli_cmd("data.num_images=64", "data.batch_size=8", "trainer.accelerator=cpu", "trainer.devices=2",
                "trainer.strategy=ddp", "model=spectral", *EVERYTHING, f"hydra.run.dir={run}",
                "+callbacks.probe._target_=probe.Probe", f"+callbacks.probe.dirpath={probe}"),
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4 + 2  # 64 images / (2 ranks x 8) = 4 D steps, 2 G steps
    assert ckpt["celebgan_config"]["model"]["discriminator"]["spectral_norm"] is True
    r0, r1 = (torch.load(probe / f"rank{r}.pt", weights_only=True) for r in range(2))
    for name in r0["params"]:
        assert torch.equal(r0["state_dict"][name], r1["state_dict"][name]), name
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


@pytest.mark.parametrize("objective, real_label, d_name", [("bce", 0.9, "d_bce"), ("hinge", 1.0, "d_hinge")])
def test_checkpoints_from_before_losses_were_config_still_load(make_cfg, tmp_path, objective, real_label, d_name):
    from celebgan.run.checkpoint import CONFIG_KEY, load_gan

    cfg = make_cfg()
    gan = hydra.utils.instantiate(cfg.model)
    config = OmegaConf.to_container(cfg, resolve=True)
    old_model = {k: v for k, v in config["model"].items() if k not in ("d_loss", "g_loss")}
    config["model"] = {**old_model, "objective": objective, "real_label": real_label}  # the old shape
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": gan.state_dict(), CONFIG_KEY: config}, path)
    loaded, _ = load_gan(path)
    assert loaded.d_loss_fn.func is getattr(losses, d_name)
    assert loaded.d_loss_fn.keywords == ({"real_label": real_label} if objective == "bce" else {})
    assert torch.equal(loaded.sample(gan.fixed_z[:2]), gan.eval().sample(gan.fixed_z[:2]))


def test_checkpoints_from_before_the_wings_still_load(make_cfg, tmp_path):
    """A checkpoint written when the modules sat side by side names celebgan.module.GAN,
    celebgan.networks.Generator, celebgan.losses.d_bce, celebgan.data.SyntheticDataModule."""
    from celebgan.run.checkpoint import CONFIG_KEY, FORMER_MODULES, load_gan

    cfg = make_cfg("model/penalty=r1")
    gan = hydra.utils.instantiate(cfg.model)
    text = OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True))
    for old, new in FORMER_MODULES.items():
        text = text.replace(new, old)
    config = OmegaConf.to_container(OmegaConf.create(text))
    assert config["model"]["_target_"] == "celebgan.module.GAN"
    assert config["data"]["_target_"] == "celebgan.data.SyntheticDataModule"
    assert config["model"]["penalties"]["r1"]["_target_"] == "celebgan.penalties.R1"
    path = tmp_path / "before_wings.ckpt"
    torch.save({"state_dict": gan.state_dict(), CONFIG_KEY: config}, path)
    loaded, stored = load_gan(path)
    assert stored["model"]["_target_"] == "celebgan.gan.module.GAN"
    assert stored["data"]["_target_"] == "celebgan.data.modules.SyntheticDataModule"
    assert loaded.d_loss_fn.func is losses.d_bce
    assert torch.equal(loaded.sample(gan.fixed_z[:2]), gan.eval().sample(gan.fixed_z[:2]))
