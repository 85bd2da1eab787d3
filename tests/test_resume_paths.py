"""Resume in process: resume=PATH, resume=auto past damaged checkpoints, LR schedules, and a
change in the number of processes between save and resume."""
import logging
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from conftest import TINY, assert_same_training_state, compose_config, copy_run
from events import events, scalars
from omegaconf import open_dict

from celebgan.errors import UserError
from celebgan.run.resume import RNGState
from celebgan.train import train

# TINY: 64 images in batches of 16, so an epoch is 4 training steps = 8 optimizer steps.
STEPS_PER_EPOCH = 8


def in_dir(cfg, run_dir: Path):
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    return cfg


def last_ckpt(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_resume_path_continues_the_run_in_its_folder_and_equals_an_uninterrupted_run(make_cfg, tmp_path, trained_run):
    straight, first, second = trained_run.dir, tmp_path / "runs" / "first", tmp_path / "runs" / "second"
    train(in_dir(make_cfg("trainer.max_epochs=1"), first))
    assert last_ckpt(first)["global_step"] == STEPS_PER_EPOCH

    resume = first / "checkpoints" / "last.ckpt"
    train(in_dir(make_cfg("trainer.max_epochs=2", f"resume={resume}"), second))
    resumed = last_ckpt(first)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * STEPS_PER_EPOCH
    assert_same_training_state(last_ckpt(straight), resumed)
    # Continued in the checkpoint's run: its TensorBoard run and grids go on; the new folder holds none.
    steps = [e.step for e in scalars(first, "train/d_loss")]
    assert steps == [e.step for e in scalars(straight, "train/d_loss")] == list(range(1, 9))
    assert sorted(p.name for p in (first / "samples").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]
    assert not second.exists() or not {"checkpoints", "samples"} & {p.name for p in second.iterdir()}
    assert not second.exists() or not list(second.glob("events.out.tfevents.*"))


@pytest.mark.parametrize("schedule", ["step", "linear"])
def test_resume_with_an_lr_schedule_continues_its_learning_rates(make_cfg, tmp_path, schedule):
    # Stepped every training step: StepLR halving every 2 steps, or LinearLR to 0 over the run's 8.
    # The interrupted run is stopped by SIGTERM halfway (its config is the uninterrupted run's) and resumed.
    run = ["trainer.max_epochs=2", f"lr_schedule={schedule}", "model=ttur",
           *(["model.lr_scheduler.step_size=2"] if schedule == "step" else [])]
    per_epoch = STEPS_PER_EPOCH // 2  # training steps (STEPS_PER_EPOCH counts Lightning's optimizer steps)
    straight, first = tmp_path / "straight", tmp_path / "runs" / "first"
    train(in_dir(make_cfg(*run), straight))
    with pytest.raises(SystemExit):
        train(in_dir(make_cfg(*run, "+callbacks.signal._target_=probe.SignalAt",
                              f"+callbacks.signal.step={per_epoch}"), first))
    halfway = last_ckpt(first)
    assert [s["last_epoch"] for s in halfway["lr_schedulers"]] == [per_epoch] * 2
    train(in_dir(make_cfg(*run, f"resume={first / 'checkpoints' / 'last.ckpt'}"), tmp_path / "runs" / "second"))

    expected, resumed = last_ckpt(straight), last_ckpt(first)
    assert [s["last_epoch"] for s in expected["lr_schedulers"]] == [2 * per_epoch] * 2
    assert_same_training_state(expected, resumed)  # scheduler states and optimizer LRs included
    total = 2 * per_epoch
    factors = {"step": [0.5 ** (k // 2) for k in range(total)],
               "linear": [1 - k / total for k in range(total)]}[schedule]
    for run_dir in (straight, first):  # each step's rate, the resumed run continuing the same sequence
        for tag, lr0 in (("train/lr_g", 1e-4), ("train/lr_d", 4e-4)):
            assert [e.value for e in scalars(run_dir, tag)] == pytest.approx([lr0 * f for f in factors])



def test_a_linear_schedule_made_longer_on_resume_says_where_it_ended(make_cfg, tmp_path, caplog):
    # LinearLR to 0 over the 1-epoch run it began as; resumed with 2 epochs it keeps that schedule.
    run = ["lr_schedule=linear", "model=ttur"]
    first = tmp_path / "first"
    train(in_dir(make_cfg(*run, "trainer.max_epochs=1"), first))
    assert "lr_schedule=linear reached" not in caplog.text  # a run as long as it began is not warned
    per_epoch = STEPS_PER_EPOCH // 2
    train(in_dir(make_cfg(*run, "trainer.max_epochs=2", f"resume={first / 'checkpoints' / 'last.ckpt'}"),
                 tmp_path / "second"))
    assert (f"lr_schedule=linear reached its end factor (0 of each learning rate) at training step {per_epoch:,}, "
            f"the length this run began with, and stays there until it ends at step {2 * per_epoch:,}") in caplog.text
    assert [e.value for e in scalars(first, "train/lr_g")][-per_epoch:] == [0.0] * per_epoch

def make_auto_runs(make_cfg, runs: Path, *, good: bool) -> None:
    """runs/older: a finished 1-epoch run; runs/newer: the same run, newer, with its last.ckpt cut
    short (a copy truncated mid-file). good=False truncates the older one's too."""
    train(in_dir(make_cfg("trainer.max_epochs=1"), runs / "older"))
    shutil.copytree(runs / "older", runs / "newer")
    targets = [runs / "newer"] + ([] if good else [runs / "older"])
    for run_dir in targets:
        path = run_dir / "checkpoints" / "last.ckpt"
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    os.utime(runs / "older" / "checkpoints" / "last.ckpt", (1_000_000_000, 1_000_000_000))  # older by mtime


def test_resume_auto_skips_a_truncated_checkpoint_and_takes_the_next_good_one(make_cfg, tmp_path, caplog):
    runs = tmp_path / "runs"
    make_auto_runs(make_cfg, runs, good=True)
    damaged = (runs / "newer" / "checkpoints" / "last.ckpt").read_bytes()
    with caplog.at_level(logging.WARNING, logger="celebgan.run.resume"):
        train(in_dir(make_cfg("trainer.max_epochs=2", "resume=auto"), runs / "third"))
    assert f"resume=auto continues {runs / 'older'}" in caplog.text
    assert f"skipping: '{runs / 'newer' / 'checkpoints' / 'last.ckpt'}' is not a readable" in caplog.text
    resumed = last_ckpt(runs / "older")
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * STEPS_PER_EPOCH  # continued, not restarted
    assert (runs / "newer" / "checkpoints" / "last.ckpt").read_bytes() == damaged  # left as it was
    assert not (runs / "third" / "checkpoints").exists()


def test_resume_auto_takes_the_newest_runs_best_ckpt_over_an_older_run(make_cfg, tmp_path, caplog):
    # runs/newer: last.ckpt damaged, best.ckpt (a good save of the same run) intact.
    runs = tmp_path / "runs"
    train(in_dir(make_cfg("trainer.max_epochs=1"), runs / "newer"))
    best = runs / "newer" / "checkpoints" / "best.ckpt"
    shutil.copy(runs / "newer" / "checkpoints" / "last.ckpt", best)
    shutil.copytree(runs / "newer", runs / "older")
    os.utime(runs / "older" / "checkpoints" / "last.ckpt", (1_000_000_000, 1_000_000_000))
    os.utime(runs / "older" / "checkpoints" / "best.ckpt", (1_000_000_000, 1_000_000_000))
    last = runs / "newer" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    older = (runs / "older" / "checkpoints" / "last.ckpt").read_bytes()
    with caplog.at_level(logging.WARNING, logger="celebgan.run.resume"):
        train(in_dir(make_cfg("trainer.max_epochs=2", "resume=auto"), runs / "third"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resume=auto")]
    assert len(lines) == 1 and lines[0].startswith(f"resume=auto continues {best}, skipping: '{last}' is not a readable")
    resumed = last_ckpt(runs / "newer")  # the newest run continued from its best.ckpt, into a new last.ckpt
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * STEPS_PER_EPOCH
    assert (runs / "older" / "checkpoints" / "last.ckpt").read_bytes() == older


def test_resume_auto_with_only_damaged_checkpoints_starts_a_new_run(make_cfg, tmp_path, caplog):
    runs = tmp_path / "runs"
    make_auto_runs(make_cfg, runs, good=False)
    with caplog.at_level(logging.WARNING, logger="celebgan.run.resume"):
        train(in_dir(make_cfg("trainer.max_epochs=1", "resume=auto"), runs / "third"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resume=auto")]
    assert len(lines) == 1 and lines[0].startswith("resume=auto starts a new run")
    assert all(f"{run_dir / 'checkpoints' / 'last.ckpt'}' is not a readable" in lines[0]
               for run_dir in (runs / "newer", runs / "older"))
    fresh = last_ckpt(runs / "third")
    assert fresh["epoch"] == 0 and fresh["global_step"] == STEPS_PER_EPOCH


# --- RNG streams and the number of processes ------------------------------------------------------

def test_rng_states_of_another_process_count_leave_the_streams_alone_with_a_warning(caplog):
    torch.manual_seed(1)
    saved_one = RNGState().state_dict()
    assert len(saved_one["ranks"]) == 1
    saved_two = {"ranks": saved_one["ranks"] * 2}  # as a 2-process run writes it

    torch.manual_seed(2)
    before = torch.get_rng_state()
    with caplog.at_level(logging.WARNING, logger="celebgan.run.resume"):
        RNGState().load_state_dict(saved_two)
    assert "RNG states of 2 processes, this run has 1" in caplog.text
    assert torch.equal(torch.get_rng_state(), before)  # the fallback: streams restart, nothing is set

    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(3)
    RNGState().load_state_dict(saved_one)  # the same count: the saved stream continues
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.integration
def test_checkpoint_of_a_two_process_run_resumes_on_one_process(make_cfg, tmp_path, caplog, ddp_run):
    ddp = copy_run(ddp_run.dir, tmp_path / "runs" / "ddp")  # resumed in its own folder
    saved = last_ckpt(ddp)
    assert saved["global_step"] == 2 * STEPS_PER_EPOCH  # 2 epochs; each of 2 ranks took half the batches
    assert len(next(v for k, v in saved["callbacks"].items() if "RNGState" in k)["ranks"]) == 2

    with caplog.at_level(logging.WARNING, logger="celebgan.run.resume"):
        train(in_dir(make_cfg("trainer.max_epochs=3", f"resume={ddp / 'checkpoints' / 'last.ckpt'}"),
                     tmp_path / "runs" / "single"))
    assert "RNG states of 2 processes, this run has 1" in caplog.text
    resumed = last_ckpt(ddp)
    assert resumed["epoch"] == 2 and resumed["global_step"] == 2 * STEPS_PER_EPOCH + STEPS_PER_EPOCH


# --- trainer.max_steps: stopped at an epoch's end, or finished and extended ---------------------------

# Every run of this section: up to 10 epochs of 4 steps, 12 steps in all (3 epochs), the learning
# rates halving every epoch, so that an LR schedule stepped once too often shows in the weights.
MAX_STEPS_RUN = ["trainer.max_epochs=10", "lr_schedule=step", "model.lr_scheduler.step_size=1"]


@pytest.fixture(scope="module")
def straight_12_steps(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    train(compose_config([*TINY, *MAX_STEPS_RUN, "trainer.max_steps=12"], run_dir))
    return run_dir


def epoch_lines(caplog) -> list[str]:
    """EpochLog's lines, up to their timing: `epoch 3/10  step 12  d_loss ...`."""
    return [r.getMessage().rsplit("  (", 1)[0] for r in caplog.records if r.name == "celebgan.run.callbacks"
            and r.getMessage().startswith("epoch ")]


SIGTERM_AT_STEP_8 = ("+callbacks.signal._target_=probe.SignalAt", "+callbacks.signal.step=8")


@pytest.mark.parametrize("first", [
    ("trainer.max_epochs=2",),  # stops after epoch 1's last.ckpt: what a kill right after it leaves
    ("trainer.max_steps=8",),   # finished at an epoch's end; resumed with a larger max_steps
    ("trainer.max_steps=6",),   # finished halfway through epoch 1; resumed with a larger max_steps
    SIGTERM_AT_STEP_8,          # stopped by a signal during epoch 1's last step: saved after its end
], ids=["epoch-end", "max_steps-at-epoch-end", "max_steps-mid-epoch", "sigterm-at-epoch-end"])
def test_max_steps_resume_equals_the_uninterrupted_run(make_cfg, tmp_path, caplog, straight_12_steps, first):
    runs = tmp_path / "runs"
    if first == SIGTERM_AT_STEP_8:
        with pytest.raises(SystemExit, match=str(128 + signal.SIGTERM)):
            train(in_dir(make_cfg(*MAX_STEPS_RUN, "trainer.max_steps=12", *first), runs / "first"))
    else:
        train(in_dir(make_cfg(*MAX_STEPS_RUN, "trainer.max_steps=12", *first), runs / "first"))
    with caplog.at_level(logging.INFO, logger="celebgan.run.callbacks"):
        train(in_dir(make_cfg(*MAX_STEPS_RUN, "trainer.max_steps=12", "resume=auto"), runs / "second"))

    # Bit for bit: weights, optimizers, LR schedules, and the counters: 12 steps in 3 epochs.
    expected, resumed = last_ckpt(straight_12_steps), last_ckpt(runs / "first")
    assert resumed["global_step"] == 24 and resumed["epoch"] == 2
    assert_same_training_state(expected, resumed)
    # Every step trained and logged once, with the uninterrupted run's losses.
    steps = [(e.step, e.value) for e in scalars(runs / "first", "train/d_loss")]
    assert steps == [(e.step, e.value) for e in scalars(straight_12_steps, "train/d_loss")] and len(steps) == 12

    lines = epoch_lines(caplog)
    if first == ("trainer.max_steps=6",):
        # The cut epoch goes on from its 3rd batch; its end comes once more, with the means of the
        # batches trained since the resume.
        assert [line.split("  d_loss")[0] for line in lines] == ["epoch 2/10  step 8", "epoch 3/10  step 12"]
    else:
        # Continues with epoch 3: epoch 2's end is not run again, and the epoch means are the same.
        assert [line.split("  d_loss")[0] for line in lines] == ["epoch 3/10  step 12"]
        assert [(e.step, e.value) for e in scalars(runs / "first", "train_epoch/d_loss")] == [
            (e.step, e.value) for e in scalars(straight_12_steps, "train_epoch/d_loss")]


def test_resume_with_fewer_max_epochs_than_trained_is_one_clear_error(make_cfg, tmp_path, trained_run):
    runs = tmp_path / "runs"
    copy_run(trained_run.dir, runs / "first")  # 2 epochs
    before = sorted(runs.rglob("*"))
    with pytest.raises(UserError, match=r"has trained 2 epochs, more than trainer.max_epochs=1"):
        train(in_dir(make_cfg("trainer.max_epochs=1", "resume=auto"), runs / "second"))
    assert sorted(runs.rglob("*")) == before  # nothing written, in the checkpoint's run or elsewhere


def test_resume_with_another_batch_size_is_one_clear_error(make_cfg, tmp_path, trained_run):
    runs = tmp_path / "runs"
    copy_run(trained_run.dir, runs / "first")  # data.batch_size=16
    before = sorted(runs.rglob("*"))
    resume = runs / "first" / "checkpoints" / "last.ckpt"
    with pytest.raises(UserError, match=r"trained with data.batch_size=16 \(16 images a step\), and this run asks for data.batch_size=32 \(32\)"):
        train(in_dir(make_cfg("trainer.max_epochs=3", "data.batch_size=32", f"resume={resume}"), runs / "second"))
    assert sorted(runs.rglob("*")) == before  # nothing written, in the checkpoint's run or elsewhere


@pytest.mark.parametrize("resume", ["path", "auto"])
def test_resume_through_a_linked_checkpoint_writes_only_into_the_run_it_names(make_cfg, tmp_path, trained_run,
                                                                              caplog, resume):
    # RUN/checkpoints/last.ckpt is a link to a checkpoint kept in another folder.
    runs, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    copy_run(trained_run.dir, elsewhere)
    link = runs / "linked" / "checkpoints" / "last.ckpt"
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere / "checkpoints" / "last.ckpt")
    before = sorted(p.relative_to(elsewhere) for p in elsewhere.rglob("*"))
    caplog.set_level(logging.INFO)
    train(in_dir(make_cfg("trainer.max_epochs=3", f"resume={link if resume == 'path' else 'auto'}"), runs / "new"))
    assert sorted(p.relative_to(elsewhere) for p in elsewhere.rglob("*")) == before  # the target is only read
    assert torch.load(elsewhere / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
    assert not link.is_symlink() and last_ckpt(runs / "linked")["epoch"] == 2  # the link became the run's own
    assert [e.step for e in scalars(runs / "linked", "train/d_loss")] == [9, 10, 11, 12]
    assert (runs / "linked" / "samples" / "epoch_0003.png").is_file()
    assert f"Resuming {link}, a link to {elsewhere / 'checkpoints' / 'last.ckpt'}: that file is only read, and " \
           f"the run continues in {runs / 'linked'}" in caplog.text
