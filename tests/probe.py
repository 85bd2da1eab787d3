"""A test-only callback for subprocess runs: records what each rank saw and trained, and can block
so a test can SIGKILL the process at a known point. Passed as `+callbacks.probe._target_=probe.Probe`
with tests/ on PYTHONPATH (DDP's re-launched ranks inherit it)."""
import json
import time
from pathlib import Path

import torch
from lightning import Callback


class Probe(Callback):
    def __init__(self, *, dirpath: str, block_at_epoch: int = -1):
        self.dirpath, self.block_at_epoch = Path(dirpath), block_at_epoch
        self.batch_sums, self.d_loss, self.rng_at_first_step = [], [], None

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.block_at_epoch:
            (self.dirpath / "blocked").write_text(str(trainer.global_step))
            time.sleep(600)  # the test kills the process here

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.rng_at_first_step is None:  # read, not drawn from: the run's streams stay as they are
            self.rng_at_first_step = torch.get_rng_state()
        self.batch_sums.append(float(batch[0].double().sum()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.d_loss.append(float(trainer.callback_metrics["train/d_loss"]))

    def on_train_end(self, trainer, pl_module):
        self.dirpath.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        params = {n for n, _ in pl_module.named_parameters()}
        fid = trainer.callback_metrics.get("metrics/fid")
        torch.save({"state_dict": state, "params": sorted(params), "batch_sums": self.batch_sums,
                    "d_loss": self.d_loss, "world_size": trainer.world_size, "rng_at_first_step": self.rng_at_first_step,
                    "fid": None if fid is None else float(fid)},
                   self.dirpath / f"rank{trainer.global_rank}.pt")


class Poison(Callback):
    """Sets one discriminator weight to NaN at the start of `at_epoch`: the losses go non-finite."""

    def __init__(self, *, at_epoch: int = 1):
        self.at_epoch = at_epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.at_epoch:
            with torch.no_grad():
                weight = next(pl_module.discriminator.parameters())
                weight[(0,) * weight.dim()] = float("nan")


class Exploit:
    """Pickles to a call of os.system: what a malicious checkpoint would hold."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


class SignalAt(Callback):
    """Sends `signum` at the end of training step `step`, as a cluster would: to its own process, or
    with group=true to its whole process group (DataLoader workers too), as scancel and Ctrl-C do.
    kill_workers=true then SIGKILLs the DataLoader workers: workers that died of the signal before
    they could ignore it. again_while_saving=true sends the signal once more while the checkpoint
    is being saved."""

    def __init__(self, *, step: int, signum: str = "SIGTERM", group: bool = False, kill_workers: bool = False,
                 again_while_saving: bool = False):
        self.step, self.signum, self.group, self.kill_workers = step, signum, group, kill_workers
        self.again_while_saving, self.sent = again_while_saving, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import multiprocessing
        import os
        import signal

        if pl_module.steps_done != self.step:
            return
        if self.group:
            # Only a run started in its own session (start_new_session): never the test's own group.
            assert os.getpgid(0) == os.getpid(), "group=true needs a run that leads its process group"
            os.killpg(0, getattr(signal, self.signum))
        else:
            os.kill(os.getpid(), getattr(signal, self.signum))
        if self.kill_workers:
            for worker in multiprocessing.active_children():
                os.kill(worker.pid, signal.SIGKILL)
        self.sent = True

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        import os
        import signal

        if self.sent and self.again_while_saving:
            os.kill(os.getpid(), getattr(signal, self.signum))


class TrainerSettings(Callback):
    """Writes the settings the Trainer and the module run with to dirpath/settings.json."""

    def __init__(self, *, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer, pl_module):
        self.dirpath.mkdir(parents=True, exist_ok=True)
        settings = {
            "max_steps": trainer.max_steps, "limit_train_batches": trainer.limit_train_batches,
            "global_step": trainer.global_step, "check_val_every_n_epoch": trainer.check_val_every_n_epoch,
            "accumulate_grad_batches": trainer.accumulate_grad_batches,
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "profiler": type(trainer.profiler).__name__, "trainer_gradient_clip_val": trainer.gradient_clip_val,
            "gradient_clip_val": pl_module.hparams.gradient_clip_val,
            "gradient_clip_algorithm": pl_module.hparams.gradient_clip_algorithm,
        }
        (self.dirpath / "settings.json").write_text(json.dumps(settings))


class WeightChange(Callback):
    """Writes the L2 norm of each network's weight change over the fit to dirpath/change.json."""

    def __init__(self, *, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_fit_start(self, trainer, pl_module):
        self.start = {name: torch.cat([p.detach().flatten().clone() for p in getattr(pl_module, name).parameters()])
                      for name in ("generator", "discriminator")}

    def on_train_end(self, trainer, pl_module):
        change = {name: float((torch.cat([p.detach().flatten() for p in getattr(pl_module, name).parameters()])
                               - start).norm()) for name, start in self.start.items()}
        self.dirpath.mkdir(parents=True, exist_ok=True)
        (self.dirpath / "change.json").write_text(json.dumps({**change, "global_step": trainer.global_step}))


class KillRank(Callback):
    """SIGKILLs the process of DDP rank `rank` at the end of training step `step`: a process of the
    run dying (out of memory, a lost node) while the others train on."""

    def __init__(self, *, step: int, rank: int):
        self.step, self.rank = step, rank

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import os
        import signal

        if trainer.global_rank == self.rank and pl_module.steps_done == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalWhileStarting(Callback):
    """Sends `signum` to its own process before the run's first training step: `at="build"` while
    train() builds the run (the callbacks, before any Trainer), `at="fit_start"` once the Trainer
    holds the signals and the logger has declared the run."""

    def __init__(self, *, signum: str = "SIGTERM", at: str = "build"):
        self.signum, self.at = signum, at
        if at == "build":
            self.send()

    def send(self):
        import os
        import signal
        import time

        os.kill(os.getpid(), getattr(signal, self.signum))
        time.sleep(1)  # the handler runs here: the signal ends the command before the next line

    def on_fit_start(self, trainer, pl_module):
        if self.at == "fit_start":
            self.send()


class DeleteRunAt(Callback):
    """Deletes the run folder `dirpath` at the end of training step `step`, as `rm -rf RUN` from
    another shell would while the run trains (file=true: `dirpath` is one file, `rm RUN/run.lock`;
    remake=true: an empty folder is made at once under the name, as a logger's late write would)."""

    def __init__(self, *, step: int, dirpath: str, file: bool = False, remake: bool = False):
        self.step, self.dirpath, self.file, self.remake = step, dirpath, file, remake

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import errno
        import os
        import shutil

        if pl_module.steps_done == self.step and self.file:
            os.remove(self.dirpath)
        elif pl_module.steps_done == self.step:
            # TensorBoard's writer thread appends by opening its file anew: between rmtree emptying the
            # folder and removing it, the file can come back (ENOTEMPTY), and `rm -rf` is run again.
            for attempt in range(100):
                try:
                    shutil.rmtree(self.dirpath)
                    break
                except OSError as err:
                    if err.errno != errno.ENOTEMPTY or attempt == 99:
                        raise
            if self.remake:
                os.mkdir(self.dirpath)


class HangUpAt(Callback):
    """At the end of training step `step`, closes the run's terminal (`master`, the one copy of the
    pty's master side left, so the terminal hangs up: a write to it fails with EIO) and sends SIGHUP,
    as a closed ssh session does."""

    def __init__(self, *, step: int, master: int):
        self.step, self.master = step, master

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import os
        import signal

        if pl_module.steps_done == self.step:
            os.close(self.master)
            os.kill(os.getpid(), signal.SIGHUP)
