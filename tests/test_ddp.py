"""Real 2-process DDP on CPU (gloo) through `python -m celebgan.train`, as a user runs it."""
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import assert_same_training_state, cli_cmd, cli_env
from events import scalars


def run_ddp(tmp_path: Path, *overrides: str) -> tuple[Path, dict, dict]:
    run, probe = tmp_path / "run", tmp_path / "probe"
    cmd = cli_cmd(
        "data.num_images=64", "data.batch_size=8", "trainer.accelerator=cpu", "trainer.devices=2",
        f"hydra.run.dir={run}", "+callbacks.probe._target_=probe.Probe", f"+callbacks.probe.dirpath={probe}",
        *overrides,
    )
    result = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [torch.load(probe / f"rank{r}.pt", weights_only=True) for r in range(2)]
    return run, ranks[0], ranks[1]


@pytest.mark.integration
def test_two_process_ddp_one_run_folder_same_weights_reduced_metrics(ddp_run):
    # trainer.strategy stays auto: the documented `trainer.devices=2` alone must work (conftest's DDP_RUN).
    run, (r0, r1) = ddp_run.dir, ddp_run.ranks

    # One run folder, written by rank 0: no per-rank Hydra folder, no stray outputs/ or lightning_logs/.
    assert sorted(p.name for p in ddp_run.root.iterdir()) == ["cache", "probe", "run"]
    assert sorted(p.name for p in run.iterdir()) == [
        ".hydra", "checkpoints", *(p.name for p in run.glob("events.out.tfevents.*")), "hparams.yaml", "samples",
        "train.log", "train_ddp_process_1.log"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    events = list(run.glob("events.out.tfevents.*"))
    assert len(events) == 1

    # Each rank trained on its own half of the data: 64 images / (2 ranks x 8) = 4 steps an epoch each.
    assert r0["world_size"] == r1["world_size"] == 2
    assert len(r0["batch_sums"]) == len(r1["batch_sums"]) == 2 * 4
    assert not set(r0["batch_sums"]) & set(r1["batch_sums"])

    # Each rank drew its own latents and noise (rank 0 the stream a single process draws): the same
    # stream on both would repeat every fake of the global batch once per rank.
    assert not torch.equal(r0["rng_at_first_step"], r1["rng_at_first_step"])

    # Gradients were averaged: every parameter (G, D, EMA) is bit-identical on both ranks, as are
    # the fixed latents; the checkpoint holds the same weights.
    assert r0["params"] == r1["params"] and len(r0["params"]) > 10
    for name in r0["params"]:
        assert torch.equal(r0["state_dict"][name], r1["state_dict"][name]), name
    assert torch.equal(r0["state_dict"]["fixed_z"], r1["state_dict"]["fixed_z"])
    # So are G's BatchNorm statistics (averaged over the ranks' latents), which its samples read.
    g_stats = [k for k in r0["state_dict"] if k.startswith(("generator.", "generator_ema.")) and "running_" in k]
    assert g_stats and all(torch.equal(r0["state_dict"][k], r1["state_dict"][k]) for k in g_stats)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 * 2 * 4
    for name in r0["params"]:
        assert torch.equal(ckpt["state_dict"][name], r0["state_dict"][name]), name

    # Logged losses are reduced over ranks: both ranks hold the same value each step although
    # their batches differ, and TensorBoard got that value.
    assert r0["d_loss"] == pytest.approx(r1["d_loss"], rel=1e-6)
    logged = [e.value for e in scalars(run, "train/d_loss")]
    assert logged == pytest.approx(r0["d_loss"], rel=1e-5)


# trainer.strategy=ddp (no unused-parameter detection) with every training term at once:
# test_objectives.py's test_everything_at_once_under_two_process_ddp.


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("model", ["label_smoothing", "vanilla"])
def test_ddp_every_variant_with_unused_parameter_detection(tmp_path, model):
    _, r0, r1 = run_ddp(tmp_path, f"model={model}", "trainer.strategy=ddp_find_unused_parameters_true")
    for name in r0["params"]:
        assert torch.equal(r0["state_dict"][name], r1["state_dict"][name]), name


@pytest.mark.integration
@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_ddp_sync_batchnorm_on_two_gpus(tmp_path):
    _, r0, r1 = run_ddp(tmp_path, "trainer.accelerator=gpu", "trainer.sync_batchnorm=true")
    # SyncBatchNorm normalises with both ranks' batch statistics, so even the running statistics agree.
    for name, value in r0["state_dict"].items():
        assert torch.allclose(value, r1["state_dict"][name]), name


def test_sync_batchnorm_on_cpu_is_one_clear_error(make_cfg):
    from celebgan.errors import UserError
    from celebgan.train import train

    with pytest.raises(UserError, match="trainer.sync_batchnorm=true needs GPUs"):
        train(make_cfg("trainer.devices=2", "trainer.sync_batchnorm=true"))


def test_a_dead_peer_is_one_line_and_other_errors_keep_their_traceback():
    from celebgan.train import peer_died_message

    gloo = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:13037: "
                        "Connection reset by peer. This is typically caused by a remote worker hanging")
    assert peer_died_message(gloo, rank=0, world_size=2) == (
        "A process of this 2-process run died (rank 1), so rank 0 stopped as well. "
        "Continue the run from its last checkpoint with resume=auto.")
    assert "(another rank), so rank 2" in peer_died_message(gloo, rank=2, world_size=4)
    assert peer_died_message(gloo, rank=0, world_size=1) is None  # no peers: not a peer's death
    assert peer_died_message(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), rank=0, world_size=2) is None


@pytest.mark.integration
@pytest.mark.slow
def test_a_killed_rank_ends_the_run_with_one_line_and_resume_equals_the_uninterrupted_run(tmp_path):
    ddp = ["data.num_images=64", "data.batch_size=8", "trainer.accelerator=cpu", "trainer.devices=2",
           "trainer.strategy=ddp", "trainer.max_epochs=2"]  # 2 epochs of 4 steps on each rank

    def train_ddp(run: Path, *overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run(cli_cmd(*ddp, f"hydra.run.dir={run}", *overrides), cwd=tmp_path, env=cli_env(),
                              capture_output=True, text=True, timeout=300)

    def probed(name: str) -> list[str]:
        return ["+callbacks.probe._target_=probe.Probe", f"+callbacks.probe.dirpath={tmp_path / name}"]

    straight = train_ddp(tmp_path / "straight", *probed("straight_probe"))
    assert straight.returncode == 0, straight.stderr[-4000:]

    # Rank 1 dies halfway through epoch 1, after epoch 0's last.ckpt: rank 0 stops at its next
    # collective operation with one line, where gloo's traceback was.
    first = tmp_path / "runs" / "first"
    killed = train_ddp(first, "+callbacks.kill._target_=probe.KillRank", "+callbacks.kill.step=6",
                       "+callbacks.kill.rank=1")
    out = killed.stdout + killed.stderr
    assert killed.returncode == 1, out[-4000:]
    assert ("A process of this 2-process run died (rank 1), so rank 0 stopped as well. Continue the run from "
            "its last checkpoint with resume=auto.") in out
    assert "Traceback" not in out and "Connection reset" not in out and "Connection closed" not in out
    assert torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2 * 4

    # resume=auto with 2 processes continues it exactly: each rank's epoch-1 batches and losses, and
    # the weights, optimizers and counters of the run that was never stopped.
    resumed = train_ddp(tmp_path / "runs" / "second", "resume=auto", *probed("resumed_probe"))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert_same_training_state(torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True),
                               torch.load(first / "checkpoints" / "last.ckpt", weights_only=True))
    for rank in range(2):
        s, r = (torch.load(tmp_path / name / f"rank{rank}.pt", weights_only=True)
                for name in ("straight_probe", "resumed_probe"))
        assert r["batch_sums"] == s["batch_sums"][4:] and r["d_loss"] == s["d_loss"][4:]
        for name, value in s["state_dict"].items():
            # Not rank 1's BatchNorm statistics of D: each rank's own, and read by nothing (D runs in
            # training mode only); the checkpoint holds rank 0's, which DDP's first forward copies
            # to every rank. G's are averaged over the ranks at every step: the same on each.
            if rank == 0 or not (name.startswith("discriminator.") and "running_" in name):
                assert torch.equal(value, r["state_dict"][name]), (rank, name)
