"""A test-only callback for subprocess runs: records what each rank saw and trained, and can block
so a test can SIGKILL the process at a known point. Passed as `+callbacks.probe._target_=probe.Probe`
with tests/ on PYTHONPATH (DDP's re-launched ranks inherit it)."""
import time
from pathlib import Path

import torch
from lightning import Callback


class Probe(Callback):
    def __init__(self, *, dirpath: str, block_at_epoch: int = -1):
        self.dirpath, self.block_at_epoch = Path(dirpath), block_at_epoch
        self.batch_sums, self.d_loss = [], []

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.block_at_epoch:
            (self.dirpath / "blocked").write_text(str(trainer.global_step))
            time.sleep(600)  # the test kills the process here

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch_sums.append(float(batch[0].double().sum()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.d_loss.append(float(trainer.callback_metrics["train/d_loss"]))

    def on_train_end(self, trainer, pl_module):
        self.dirpath.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        params = {n for n, _ in pl_module.named_parameters()}
        fid = trainer.callback_metrics.get("metrics/fid")
        torch.save({"state_dict": state, "params": sorted(params), "batch_sums": self.batch_sums,
                    "d_loss": self.d_loss, "world_size": trainer.world_size,
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


def random_features(*, weights=None):
    """metrics.feature_extractor for subprocess runs: RandomFeatures in place of Inception, taking
    (and ignoring) the Inception node's `weights` key, which a command-line override cannot drop."""
    from celebgan.features import RandomFeatures

    return RandomFeatures()
