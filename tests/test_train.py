"""End to end: train(cfg) on tiny synthetic runs writes logs, grids and checkpoints."""
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import cli_cmd, cli_env
from omegaconf import OmegaConf, open_dict
from events import events, hparams, scalars

from celebgan.train import sweep_folder_overrides, train


def test_fit_writes_scalars_images_samples_and_checkpoint(trained_run):
    metrics, run = trained_run.metrics, trained_run.dir  # TINY for 2 epochs
    acc = events(run)
    tags = set(acc.Tags()["scalars"])
    for tag in ["d_loss", "g_loss", "D_x", "D_G_z1", "D_G_z2"]:
        assert f"train/{tag}" in tags  # every step, the names the README gives
        assert f"train_epoch/{tag}" in tags  # the epoch's mean
    steps = [e.step for e in acc.Scalars("train/d_loss")]
    assert len(steps) == 2 * 64 // 16  # logged every step: 4 batches x 2 epochs
    d_loss = [e.value for e in acc.Scalars("train/d_loss")]
    epoch_means = [(e.step, e.value) for e in acc.Scalars("train_epoch/d_loss")]
    assert epoch_means == [(4, pytest.approx(sum(d_loss[:4]) / 4)), (8, pytest.approx(sum(d_loss[4:]) / 4))]
    assert acc.Tags()["images"] == ["train/samples"]
    assert steps == list(range(1, 9))  # x-axis: training steps done, as the console counts
    assert [e.step for e in acc.Images("train/samples")] == [4, 8]  # after each epoch's 4 steps, as its curves
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert 0.0 < metrics["train_epoch/D_x"] < 1.0

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 * 8  # two optimizer steps per batch
    assert ckpt["celebgan_config"]["data"]["img_size"] == 16
    assert torch.equal(ckpt["state_dict"]["fixed_z"], torch.randn(16, 100, 1, 1, generator=torch.Generator().manual_seed(0)))


def test_training_changes_both_networks(make_cfg, trained_run):
    import hydra

    cfg = make_cfg()
    torch.manual_seed(cfg.seed)  # train() seeds the same way before building the model
    before = hydra.utils.instantiate(cfg.model)
    ckpt = torch.load(trained_run.ckpt, map_location="cpu", weights_only=True)
    sd = ckpt["state_dict"]
    # Same seed, same init: training moved G, D and the EMA away from their initial weights.
    for name in ["generator.main.0.weight", "discriminator.main.0.weight", "generator_ema.main.0.weight"]:
        assert sd[name].shape == before.state_dict()[name].shape
        assert not torch.allclose(sd[name], before.state_dict()[name])


# A missing CelebA folder from the command line (exit status 2, one message, no run folder left):
# tests/test_cli_errors.py's table; the message's content: test_data.py.


def test_max_steps_counts_training_steps_not_optimizer_steps(make_cfg, caplog):
    # Lightning's max_steps counts optimizer steps (a D step and each G step); celebgan's counts
    # real batches, the unit of the TensorBoard x-axis. 4 batches an epoch: stops in epoch 1.
    cfg = make_cfg("trainer.max_epochs=5", "trainer.max_steps=6", "model.n_dis=2")
    with caplog.at_level("INFO", logger="celebgan.train"):
        train(cfg)
    assert "stops after 6 training steps (real batches): 6 D steps and 3 G steps" in caplog.text
    assert "max_steps=9 optimizer steps" in caplog.text  # what Lightning's own stop message will say
    run = Path(cfg.paths.output_dir)
    assert [e.step for e in scalars(run, "train/d_loss")] == list(range(1, 7))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6 + 3  # 6 D steps, a G step on every 2nd


@pytest.mark.parametrize("model", ["vanilla", "projection"])
def test_a_bad_model_setting_is_reported_before_the_data_is_read(make_cfg, tmp_path, model):
    # The data's own mistake would be reported when it is read; the model's comes first.
    from celebgan.errors import UserError

    cfg = make_cfg(f"model={model}", "model.generator.ngf=0", "data.split=bogus")  # bad data too
    with pytest.raises(UserError, match="model.generator.ngf=0 must be a whole number >= 1"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_a_callback_set_to_null_is_turned_off(make_cfg):
    from celebgan.run.callbacks import SampleGrid
    from celebgan.train import build

    def kinds(*overrides):
        return {type(c).__name__ for c in build(make_cfg(*overrides)).callbacks}

    every = kinds()
    assert "SampleGrid" in every and "ModelCheckpoint" in every
    assert kinds("callbacks.sample_grid=null") == every - {SampleGrid.__name__}
    assert not {"SampleGrid", "ModelCheckpoint", "NonFiniteGuard"} & kinds("callbacks=[]")


@pytest.mark.integration
def test_multirun_gives_each_job_its_own_run_folder_named_by_the_swept_keys_alone(tmp_path):
    sweep = tmp_path / "sweep"
    python, flag, module, *overrides = cli_cmd("model=vanilla,hinge", "trainer.max_steps=1")
    cmd = [python, flag, module, "--multirun", *overrides, f"hydra.sweep.dir={sweep}"]
    result = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    # Not 0_+trainer.max_steps=1,data.batch_size=16,...,model=vanilla: the fixed keys are the same in every job.
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0_model=vanilla", "1_model=hinge"]
    for job in ["0_model=vanilla", "1_model=hinge"]:
        run = sweep / job
        assert (run / ".hydra" / "config.yaml").is_file()
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert (run / "samples" / "epoch_0001.png").is_file()
        # The swept key is the HParams column TensorBoard shows first (and the only one flagged).
        infos, row = hparams(run)
        assert [i.display_name for i in infos if i.differs] == ["model"] and row["model"] == job.split("=")[1]
    # Each job points TensorBoard at the sweep, where its run is named by its folder alone.
    assert f"tensorboard --logdir {sweep} --samples_per_plugin images=1000" in result.stdout + result.stderr


def test_sweep_folder_overrides_leave_out_every_single_valued_key():
    (override,) = sweep_folder_overrides(["-m", "model=vanilla,hinge", "+trainer.max_steps=20", "seed=range(1,3)",
                                          "model/penalty=[r1,r2]", "hydra/launcher=slurm"])
    key, value = override.split("=", 1)
    excluded = value.strip("[]").replace("'", "").split(",")
    assert key == "hydra.job.config.override_dirname.exclude_keys"
    assert {"trainer.max_steps", "model/penalty", "data.root"} <= set(excluded)  # one value each, a list too
    assert not {"model", "seed", "hydra/launcher"} & set(excluded)  # swept, or Hydra's own
    assert sweep_folder_overrides(["model=vanilla,hinge"]) == []  # not a sweep


def test_train_leaves_its_config_as_composed(make_cfg, tmp_path):
    # metrics=auto on a CPU and a resumed run's folder are decided in the config and beside it.
    runs = tmp_path / "runs"
    first = make_cfg("metrics=auto")
    with open_dict(first):
        first.paths.output_dir = str(runs / "first")
    before = OmegaConf.to_container(first)
    train(first)
    assert OmegaConf.to_container(first) == before
    second = make_cfg("metrics=auto", "resume=auto", "trainer.max_epochs=2")
    with open_dict(second):
        second.paths.output_dir = str(runs / "second")
    before, resolved = OmegaConf.to_container(second), OmegaConf.to_container(second, resolve=True)
    train(second)
    assert OmegaConf.to_container(second) == before and OmegaConf.to_container(second, resolve=True) == resolved
    assert (runs / "first" / "checkpoints" / "last.ckpt").is_file() and not (runs / "second" / "checkpoints").exists()
