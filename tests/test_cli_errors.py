"""A table of mistakes a user makes on the command line: each ends with exit status 2 and one
message that names the problem, no traceback, and before any training starts.

The command lines run one after another in a single interpreter (tests/cli_runner.py runs each
as `python -m MODULE ARGS` would): starting Python with torch and Lightning once per case would
cost more than the cases themselves."""
import errno
import time
from pathlib import Path

import pytest
from conftest import TINY, TINY_CLI, compose_config, make_celeba, run_commands

from celebgan.train import train

TRAIN = "celebgan.train"


def table(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(module, arguments, a piece of the expected message) per mistake."""
    garbage = tmp / "garbage"
    make_celeba(garbage, per_split=1)
    (garbage / "celeba" / "list_eval_partition.txt").write_text(
        "<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head></html>\n")
    kaggle = tmp / "kaggle"
    make_celeba(kaggle, layout="kaggle", per_split=1)
    (kaggle / "list_eval_partition.csv").write_bytes(bytes(range(256)) * 4)
    (tmp / "empty").mkdir()
    not_a_ckpt = tmp / "notes.ckpt"
    not_a_ckpt.write_text("not a checkpoint")
    celeba = ["data=celeba32", f"data.root={garbage}"]
    good = tmp / "good"  # readable: only the command line is wrong
    make_celeba(good, per_split=1)
    unreadable = tmp / "unreadable"
    for name in make_celeba(unreadable, per_split=1):
        (unreadable / "celeba" / "img_align_celeba" / name).write_bytes(b"<html>not a JPEG</html>")
    ckpt = tiny_checkpoint(tmp / "trained")
    return [
        (TRAIN, ["data.batch_size=0"], "data.batch_size=0"),
        (TRAIN, ["data.batch_size=-3"], "data.batch_size=-3"),
        (TRAIN, ["data.batch_size=abc"], "data.batch_size='abc'"),
        (TRAIN, ["data.batch_size=2.5"], "data.batch_size=2.5"),
        (TRAIN, ["data.batchsize=16"], "data.batchsize"),
        (TRAIN, ["+data.colour=red"], "colour"),
        (TRAIN, ["model=nosuch"], "nosuch"),
        (TRAIN, ["data=celeba128"], "celeba128"),
        (TRAIN, ["data.img_size=48"], "img_size=48 is not supported"),
        (TRAIN, ["data.img_size=big"], "img_size"),
        (TRAIN, ["data.img_size=["], "data.img_size=["),
        (TRAIN, ["data.num_workers=-1"], "data.num_workers=-1"),
        (TRAIN, ["data.num_images=0"], "data.num_images=0"),
        (TRAIN, ["trainer.max_epochs=-5"], "max_epochs"),
        (TRAIN, ["trainer.max_epochs=ten"], "max_epochs"),
        (TRAIN, ["trainer.precision=17"], "precision"),
        (TRAIN, ["trainer.accelerator=tpu"], "tpu"),
        (TRAIN, ["trainer.devices=9999"], "Use trainer.devices="),
        (TRAIN, ["trainer.sync_batchnorm=true"], "sync_batchnorm"),
        (TRAIN, ["model.g_optimizer.lr=-1"], "model.g_optimizer.lr=-1 must be a number >= 0"),
        (TRAIN, ["model.d_optimizer.betas=[0.5,2]"], "model.d_optimizer.betas=[0.5, 2] must be two"),
        (TRAIN, ["model.n_dis=0"], "model.n_dis=0"),
        (TRAIN, ["model.d_loss.real_label=2"], "real_label=2"),
        (TRAIN, ["model.augment=[zoom]"], "zoom"),
        (TRAIN, ["callbacks.divergence.action=explode"], "callbacks.divergence.action"),
        # Values that failed only once the logger had written a run folder, or with a traceback.
        (TRAIN, ["model.d_optimizer.lr=fast"], "model.d_optimizer.lr='fast' must be a number >= 0"),
        (TRAIN, ["model.g_optimizer.betas=[0.9,1.0]"], "model.g_optimizer.betas=[0.9, 1.0] must be two numbers"),
        (TRAIN, ["trainer.precision=16-mixed"], "Use trainer.precision=32-true"),
        (TRAIN, ["data=celeba32", f"data.root={unreadable}", "data.batch_size=1"], "could be read"),
        ("celebgan.sample", [f"ckpt={ckpt}", "n=1e7"], "n=10000000.0 must be a whole number >= 1 (write n="),
        ("celebgan.sample", [f"ckpt={ckpt}", "mode=images", "n=0"], "n=0 must be a whole number >= 1"),
        ("celebgan.sample", [f"ckpt={ckpt}", "n=1000000000"], "mode=images, which streams"),
        ("celebgan.sample", [f"ckpt={ckpt}", "mode=compare", "n=1000000000"], "GB available"),
        (TRAIN, ["resume=/nonexistent/last.ckpt"], "Checkpoint not found"),
        (TRAIN, [f"resume={not_a_ckpt}"], "is not a PyTorch checkpoint: torch.save writes a zip archive"),
        (TRAIN, ["data=celeba32", f"data.root={tmp / 'nowhere'}"], "CelebA folder not found"),
        (TRAIN, ["data=celeba32", f"data.root={tmp / 'empty'}"], "No images found"),
        (TRAIN, celeba, "list_eval_partition.txt"),
        (TRAIN, ["data=celeba32", f"data.root={kaggle}"], "list_eval_partition.csv"),
        (TRAIN, [*celeba[:1], f"data.root={kaggle}", "data.split=validation"], "data.split='validation'"),
        (TRAIN, [*celeba[:1], f"data.root={kaggle}", "data.crop=middle"], "data.crop='middle'"),
        (TRAIN, [*celeba[:1], f"data.root={kaggle}", "data.prepared=maybe"], "data.prepared='maybe'"),
        (TRAIN, ["data.split=bogus"], "data.split='bogus' is not one of the synthetic faces' splits ['train', 'valid', 'test']"),
        (TRAIN, ["data.split=all"], "data.split='all' is not one of the synthetic faces' splits"),
        (TRAIN, [*celeba[:1], f"data.root={good}", "data.split=bogus"], "['train', 'valid', 'test', 'all']"),
        (TRAIN, [*celeba[:1], f"data.root={good}", "data.num_workers=many"], "data.num_workers='many' must be a whole number >= 0"),
        ("celebgan.prepare", [*celeba[:1], f"data.root={good}", "workers=-1"], "workers=-1 must be a whole number >= 0"),
        ("celebgan.prepare", [*celeba[:1], f"data.root={good}", "workers=many"], "workers='many' must be a whole number"),
        ("celebgan.prepare", [*celeba[:1], f"data.root={good}", "force=maybe"], "force='maybe' must be true or false"),
        ("celebgan.prepare", [*celeba[:1], f"data.root={good}", "worker=2"], "Could not override 'worker'"),
        ("celebgan.prepare", ["data=celeba16"], "celeba16"),
        ("celebgan.prepare", [*celeba[:1], f"data.root={good}", "--workers", "1"], "unrecognized arguments: --workers"),
        ("celebgan.plot", [], "run is required"),
        ("celebgan.plot", [f"run={tmp / 'empty'}"], "No TensorBoard event files"),
        ("celebgan.plot", [f"run={tmp / 'empty'}", "smooth=0.5"], "Could not override 'smooth'"),
        ("celebgan.plot", [f"run={tmp / 'empty'}", "smoothing=1.5"], "smoothing=1.5 must be a number in [0, 1)"),
        ("celebgan.plot", [f"run={tmp / 'empty'}", "smoothing=high"], "smoothing='high' must be a number"),
        ("celebgan.plot", [f"run={tmp / '0_model=vanilla'}"], f"\"run='{tmp / '0_model=vanilla'}'\""),
        ("celebgan.prepare", [*celeba[:1], f"data.root={good}", "data.split=bogus"], "data.split='bogus'"),
        ("celebgan.evaluate", [], "needs a checkpoint"),
        ("celebgan.evaluate", [f"ckpt={tmp / 'none.ckpt'}"], "Checkpoint not found"),
        ("celebgan.evaluate", ["ckpt=x", "n_sample=5"], "n_sample"),
        ("celebgan.sample", ["mode=nosuch"], "mode='nosuch'"),
        ("celebgan.sample", [f"ckpt={not_a_ckpt}"], "is not a PyTorch checkpoint: torch.save writes a zip archive"),
        ("celebgan.prepare", ["data=synthetic"], "needs no preparing"),
        # A device this machine lacks, a path under a file, a setting's number against its meaning.
        ("celebgan.sample", [f"ckpt={ckpt}", "device=cuda:99"], "device=cuda:99"),
        ("celebgan.evaluate", [f"ckpt={ckpt}", "device=quantum"], "device='quantum' is not a device: use auto"),
        ("celebgan.sample", [f"ckpt={ckpt}", f"out={not_a_ckpt}/grid.png"], "which is a file, not a folder"),
        ("celebgan.sample", [f"ckpt={ckpt}", "mode=images", f"out={not_a_ckpt}/faces"], "which is a file, not a folder"),
        ("celebgan.sample", [f"ckpt={ckpt}", "seed=-1"], "seed=-1 must be a whole number >= 0"),
        ("celebgan.sample", [f"ckpt={ckpt}", "mode=progress", "progress.frame_ms=-400"], "progress.frame_ms=-400 must"),
        ("celebgan.sample", [f"ckpt={ckpt}", "mode=attributes", "direction.strength=-2"], "direction.strength=-2 must"),
        ("celebgan.sample", [f"ckpt={ckpt}", "direction.classifier.epochs=0"], "direction.classifier.epochs=0 must"),
        ("celebgan.evaluate", [f"ckpt={ckpt}", "n_samples=abc"], "n_samples='abc' must be a whole number >= 2"),
        ("celebgan.evaluate", [f"ckpt={ckpt}", "n_real=-5"], "n_real=-5 must be a whole number >= 2"),
        ("celebgan.evaluate", [f"ckpt={ckpt}", "pr_k=0"], "pr_k=0 must be a whole number >= 1"),
        ("celebgan.evaluate", [f"ckpt={ckpt}", "metrics.kid_subsets=-1"], "metrics.kid_subsets=-1 must"),
        ("celebgan.evaluate", [f"ckpt={ckpt}", "obedience.n_ceiling=-3"], "obedience.n_ceiling=-3 must"),
        ("celebgan.evaluate", [f"ckpt={ckpt}", "obedience.classifier.lr=-1"], "obedience.classifier.lr=-1 must be a number > 0"),
        ("celebgan.prepare", [*celeba[:1], f"data.root={good}", "data.img_size=-5"], "img_size=-5 is not supported"),
        (TRAIN, ["model.generator.ngf=0"], "model.generator.ngf=0 must be a whole number >= 1"),
        (TRAIN, ["model.generator.nz=-100"], "model.generator.nz=-100 must be a whole number >= 1"),
        (TRAIN, ["model.discriminator.ndf=0"], "model.discriminator.ndf=0 must be a whole number >= 1"),
        (TRAIN, ["model.discriminator.dropout=1.5"], "model.discriminator.dropout=1.5 must be a number >= 0 and < 1"),
        (TRAIN, ["model.ema_half_life=-1"], "model.ema_half_life=-1 must be a number >= 0"),
        (TRAIN, ["model.num_fixed=-8"], "model.num_fixed=-8 must be a whole number >= 1"),
        (TRAIN, ["model.instance_noise=-0.1"], "model.instance_noise=-0.1 must be a number >= 0"),
        (TRAIN, ["model.gradient_clip_val=-1"], "model.gradient_clip_val=-1 must be a number > 0 (or null)"),
        (TRAIN, ["model/penalty=r1", "model.penalties.r1.every=0"], "model.penalties.r1.every=0 must be"),
        (TRAIN, ["model/penalty=r1", "model.penalties.r1.gamma=-10"], "model.penalties.r1.gamma=-10 must be"),
        (TRAIN, ["+model.generator._args_=[3]"], "positional argument"),
        ("celebgan.prepare", ["data=celeba32", f"data.root={tmp / 'nowhere'}"], "CelebA folder not found"),
        ("celebgan.prepare", ["data=celeba32", "data.batchsize=3"], "data.batchsize"),
    ]


def tiny_checkpoint(run: Path) -> Path:
    train(compose_config([*TINY, "trainer.max_steps=1"], run))
    return run / "checkpoints" / "last.ckpt"


def run_table(tmp: Path) -> tuple[list, list, float]:
    cases = table(tmp)
    runs = []
    for i, (module, args, _) in enumerate(cases):
        if module == TRAIN:  # the tiny run's settings; data.num_images exists for synthetic data only
            tiny = [o for o in TINY_CLI if "data=celeba32" not in args or not o.startswith("data.num_images")]
            args = [*tiny, *args, f"hydra.run.dir={tmp / 'runs' / str(i)}"]
        runs.append((module, args))
    start = time.perf_counter()
    results = run_commands(runs, tmp)
    return cases, results, time.perf_counter() - start


@pytest.mark.integration
def test_each_user_mistake_is_one_message_and_exit_status_2(tmp_path):
    cases, results, seconds = run_table(tmp_path)
    assert len(cases) >= 25
    failures = []
    for (module, args, expected), result in zip(cases, results):
        out = result["output"]
        errors = out.count("[ERROR]") + out.count("Error: ") + out.count("error: ")
        if result["code"] != 2 or "Traceback" in out or expected not in out or errors > 1:
            failures.append(f"{module} {' '.join(args)} -> exit {result['code']}:\n{out[-1500:]}")
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n\n" + "\n\n".join(failures)
    # Nothing was trained, and nothing was left: no run folder, no sample output.
    assert not list(tmp_path.glob("runs/*/checkpoints/*.ckpt"))
    assert not list(tmp_path.rglob("prepared")) and not list(tmp_path.rglob(".*.tmp*"))  # nor prepared
    assert not list(tmp_path.glob("runs/*")) and not (tmp_path / "outputs").exists()
    print(f"{len(cases)} command lines in {seconds:.1f} s, "
          f"slowest {max(r['seconds'] for r in results):.1f} s")


def test_a_full_disk_that_also_fails_the_cleanup_is_still_one_message():
    from celebgan.cli import user_message
    from celebgan.errors import UserError

    # The grid's write fails; the loggers' final flush then fails on the same full disk.
    try:
        try:
            raise UserError("Could not write samples/epoch_0000.png: [Errno 28] No space left on device.")
        except UserError:
            raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as err:
        assert user_message(err).startswith("Could not write samples/epoch_0000.png")
    # A full disk met first in a library's writer names the reason and what to do.
    assert "Free space" in user_message(OSError(errno.ENOSPC, "No space left on device", "events.out"))
    # A bug raised while handling a user's mistake keeps its traceback.
    try:
        try:
            raise UserError("a mistake")
        except UserError:
            raise KeyError("a bug")
    except KeyError as err:
        assert user_message(err) is None


def test_a_mistake_that_ends_a_job_is_one_line_on_stderr_and_in_the_jobs_log_file(tmp_path, capsys):
    import logging

    from celebgan.cli import _exit_on_user_mistake
    from celebgan.errors import UserError

    log_file = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(log_file)
    try:
        with pytest.raises(SystemExit) as exit_, _exit_on_user_mistake(in_job=True):
            raise UserError("Training diverged: the test says so.")
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "Error: Training diverged: the test says so.\n"
    assert (tmp_path / "train.log").read_text() == "Error: Training diverged: the test says so.\n"
