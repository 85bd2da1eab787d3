"""Train a GAN: `python -m celebgan.train [overrides]`, e.g. `model=spectral data=celeba32`.

train(cfg) holds the logic (tests call it with a composed config); main() is the Hydra wrapper.
"""
from __future__ import annotations

import logging
import shutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from celebgan.conf.resolvers import trains_on_gpu
from celebgan.run import lock, startup
from celebgan.run.lightning_compat import LEAFSPEC_WARNING, quiet_lightning
from celebgan.run.startup import holds_only_startup_files
from celebgan.run.sweep import tensorboard_command, write_job_summary
from celebgan.conf import CONFIG_DIR
from celebgan.cli import command, wrapped_user_error
from celebgan.errors import UserError
from celebgan.io import remove_stale_temporaries

if TYPE_CHECKING:
    import lightning as L

    from celebgan.gan.module import GAN

# torch, Lightning and TensorBoard are imported where a run starts (build, check_readable,
# startup.logs_no_step): --help, --cfg job and a mistake on the command line answer without them.

log = logging.getLogger(__name__)


def instantiate(node, **kwargs):
    """hydra.utils.instantiate, except that a UserError raised by a constructor stays a UserError
    (Hydra wraps it), so the command line can print its message alone."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        if (user_error := wrapped_user_error(err)) is not None:
            raise user_error from None
        raise


def check_precision(precision, accelerator: str) -> None:
    """16-mixed on a CPU is refused. Lightning would train in bf16-mixed instead, with a warning
    among its start-up lines: another number format, without 16-mixed's loss scaling, and on a CPU
    without native bf16 an emulated one, 8-25x slower than 32-true (conf/resolvers.py). A run in a
    precision nobody asked for, that slow, costs more than one changed setting."""
    if str(precision) in ("16-mixed", "16") and not trains_on_gpu(accelerator):
        raise UserError(f"trainer.precision={precision} needs a GPU, and this run trains on the CPU (where "
                        "Lightning would switch to bf16-mixed, which most CPUs emulate, many times slower). Use "
                        "trainer.precision=32-true (the CPU default, fastest there), or bf16-mixed on a CPU "
                        "with native bf16 (AVX512-BF16 or AMX).")


def lightning_logs_once() -> None:
    """Lightning's lines go through the handlers Hydra set up (the console and the job's log file)
    alone. Imported after them, Lightning's package logger adds a console handler of its own, which
    would print each of its lines a second time ("INFO: Seed set to 42"); imported before them (a
    notebook, a script that imports lightning first), lightning.pytorch's and lightning.fabric's
    loggers get one each too and stop passing their lines on, so that none reached the log file."""
    import lightning  # noqa: F401  (the import adds the handlers)

    if logging.getLogger().hasHandlers():
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True


def check_optimized_metric(cfg: DictConfig) -> None:
    metric = cfg.get("optimized_metric")
    if metric is None:
        return
    if metric not in ("metrics/fid", "metrics/kid"):
        raise UserError(f"optimized_metric={metric!r}: a sweeper can minimise metrics/fid or metrics/kid.")
    if not cfg.metrics.every_n_epochs:
        raise UserError(f"optimized_metric={metric} needs FID/KID measured during training, but metrics are "
                        "off. Use metrics=small (or metrics=default) with metrics.every_n_epochs >= 1.")


def summary(trainer: L.Trainer, output_dir: Path, *, stopped: bool = False) -> str:
    """What a run left behind and how to look at it: the closing lines of every run, finished or
    stopped by a signal (then with how to continue it)."""
    metrics = trainer.callback_metrics
    steps = trainer.lightning_module.steps_done
    first = (f"Stopped in epoch {trainer.current_epoch + 1}, after {steps} training steps; resume=auto continues "
             "the run." if stopped else f"Finished after {trainer.current_epoch} epoch(s), {steps} training steps.")
    lines = [first, f"  run folder:  {output_dir}"]
    grids = sorted((output_dir / "samples").glob("epoch_*.png"))
    if grids:
        lines.append(f"  last grid:   {grids[-1]}")
    for name in ("last", "best"):
        ckpt = output_dir / "checkpoints" / f"{name}.ckpt"
        if ckpt.is_file():
            lines.append(f"  checkpoint:  {ckpt}")
    losses = [f"{name} {float(metrics[key]):.3f}" for name, key in
              (("d_loss", "train_epoch/d_loss"), ("g_loss", "train_epoch/g_loss")) if key in metrics]
    if losses:
        lines.append("  final:       " + ", ".join(losses))
    quality = [f"{name} {float(metrics[key]):.4g}" for name, key in
               (("FID", "metrics/fid"), ("KID", "metrics/kid")) if key in metrics]
    if quality:
        lines.append("  quality:     " + ", ".join(quality))
    if trainer.logger is not None:  # every grid (up to 1,000), not TensorBoard's 10 per tag
        lines.append(f"  {tensorboard_command(tensorboard_logdir(output_dir))}")
    return "\n".join(lines)


def group_choices() -> dict[str, str]:
    """Hydra's choice in each config group (model=high_lr, data=synthetic, ...); {} outside Hydra."""
    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def swept_keys() -> list[str]:
    """The keys a --multirun job's sweep varies from job to job (the swept and the searched ones: its
    overrides but those that name no job folder); [] outside a sweep."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return []
    hydra_cfg = HydraConfig.get()
    unnamed = set(hydra_cfg.job.config.override_dirname.exclude_keys)
    overrides = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    return [o.key_or_group for o in overrides if not o.is_hydra_override() and o.key_or_group not in unnamed]


def tensorboard_logdir(output_dir: Path) -> Path:
    """Where to point TensorBoard: a sweep job's sweep folder, which names each run by its job folder
    alone (`0_model=vanilla`, short and told apart); else the folder that holds the run, which names
    it by its own folder (`2026-12-06_10-00-00_vanilla_synthetic`, beside the runs before it), where
    TensorBoard would call a run opened on its own folder "." (its path from --logdir). A run folder
    straight in the working, home or root folder is opened on itself: not a scan of everything there."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir)
    parent = output_dir.absolute().parent
    if parent in (Path.cwd().absolute(), Path.home().absolute(), Path(parent.anchor)):
        return output_dir
    return output_dir.parent


def check_readable(dataset) -> None:
    """Image files are decoded only once training runs, after the logger has written into the run
    folder: one decoded now (an unreadable file is skipped for the next, as in training) makes a
    folder of nothing readable fail here. The global RNG stays as it was (the transform flips at
    random), so the run trains exactly as it would without this check."""
    import torch

    from celebgan.data.modules import ImageFiles

    if isinstance(dataset, ImageFiles):
        with torch.random.fork_rng(devices=[]):
            dataset[0]


def max_steps_kwargs(cfg: DictConfig, model) -> dict[str, int]:
    """trainer.max_steps counts training steps (real batches), the unit of the TensorBoard x-axis,
    of GAN.steps_done and of every step setting (instance_noise_steps, penalty intervals).
    Lightning's own max_steps counts optimizer steps, a D step and each G step, so
    trainer.max_steps=30 would otherwise train 15 batches; the Trainer gets the converted count.
    Converted here, the one place, rather than by a resolver in the config: a resolver can convert
    only a key the user does not set, so the count would need a second key beside trainer.max_steps,
    and trainer.max_steps=N given by habit would silently count optimizer steps."""
    steps = cfg.trainer.get("max_steps")
    if steps is None or steps < 0:  # -1, Lightning's default: no limit
        return {}
    optimizer_steps = model.optimizer_steps(steps, model.n_dis)
    log.info("trainer.max_steps=%d: training stops after %d training steps (real batches): %d D steps and "
             "%d G steps (model.n_dis=%d), which Lightning counts as max_steps=%d optimizer steps",
             steps, steps, steps, optimizer_steps - steps, model.n_dis, optimizer_steps)
    return {"max_steps": optimizer_steps}


# What a surviving process's next collective operation raises when another process of a DDP run has
# died (SIGKILL, out of memory, a lost node): gloo's socket errors and NCCL's.
PEER_DIED = ("Connection reset by peer", "Connection closed by peer", "remote process exited")


def peer_died_message(err: BaseException, rank: int, world_size: int) -> str | None:
    """The one line that replaces the traceback of a collective operation whose peer process died;
    None for any other error (a bug keeps its traceback)."""
    chain = [err, err.__cause__, err.__context__]
    if world_size < 2 or not any(isinstance(e, RuntimeError) and any(s in str(e) for s in PEER_DIED) for e in chain):
        return None
    other = f"rank {1 - rank}" if world_size == 2 else "another rank"
    return (f"A process of this {world_size}-process run died ({other}), so rank {rank} stopped as well. "
            "Continue the run from its last checkpoint with resume=auto.")


@contextmanager
def logging_into(run_dir: Path) -> Iterator[None]:
    """A resumed run's lines go on in its own log file (the run folder's file of the name Hydra gave
    this command's log), beside the file of this invocation, which hydra_main removes when it holds
    nothing else: a run folder keeps its whole history, and a resume leaves no folder of a log alone."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if not files or not lock.owns_runs():
        yield
        return
    files[0].flush()
    so_far = Path(files[0].baseFilename).read_text(encoding="utf-8")  # this invocation's first lines
    handler = logging.FileHandler(run_dir / Path(files[0].baseFilename).name, mode="a", encoding="utf-8")
    handler.stream.write(so_far)
    handler.setFormatter(files[0].formatter)
    handler.setLevel(files[0].level)
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def check_clipping(trainer_cfg: DictConfig) -> None:
    """Lightning refuses gradient clipping under manual optimization, which the GAN uses: it clips
    G's and D's gradients itself, as model.gradient_clip_val and model.gradient_clip_algorithm say."""
    for key in ("gradient_clip_val", "gradient_clip_algorithm"):
        if trainer_cfg.get(key) is not None:
            raise UserError(f"trainer.{key}={trainer_cfg[key]}: Lightning cannot clip gradients under the GAN's "
                            f"manual optimization. Use model.{key}={trainer_cfg[key]} (it clips G's and D's "
                            "gradients before each of their steps).")


def metrics_note(cfg: DictConfig, accelerator: str) -> None:
    if group_choices().get("metrics") == "auto" and not cfg.metrics.every_n_epochs and not trains_on_gpu(accelerator):
        log.info("FID/KID are off: this run trains on a CPU, where Inception's few images/s would take "
                 "longer than the training. metrics=small (1,000 images) or metrics=default measure anyway.")


def note_attributes(conditional: bool, take_all: bool, attr_names: list[str]) -> None:
    if take_all:
        log.info("The model is conditional and data.attributes is null: it generates all %d of the data's "
                 "attributes (%s); data.attributes=[...] chooses some.", len(attr_names), ", ".join(attr_names))
    elif attr_names and not conditional:
        log.info("data.attributes=[%s] is ignored: this model is unconditional (model=projection or "
                 "model=acgan generate attributes on demand).", ",".join(attr_names))


def preflight(cfg: DictConfig) -> None:
    """The config's own mistakes, each a UserError before any work: nothing is read or written yet."""
    from celebgan.run.guards import check_devices, check_trainer_counts

    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    check_devices(accelerator, cfg.trainer.get("devices", 1), cfg.trainer.get("sync_batchnorm", False))
    if cfg.trainer.get("accumulate_grad_batches", 1) != 1:
        raise UserError(f"trainer.accumulate_grad_batches={cfg.trainer.accumulate_grad_batches}: a GAN step "
                        "updates D and then G on each batch, so gradients are not accumulated over batches. "
                        "For a larger effective batch raise data.batch_size (or trainer.devices).")
    check_clipping(cfg.trainer)
    metrics_note(cfg, accelerator)
    check_trainer_counts(cfg.trainer)
    check_precision(cfg.trainer.get("precision"), accelerator)
    check_optimized_metric(cfg)
    check_model(cfg.model)


def check_model(model_cfg: DictConfig) -> None:
    """The model's settings (its networks' sizes, losses, optimizers), checked by building a
    throw-away model before the data is read: the synthetic faces of a demo take half a minute to
    render. The global RNG is left as it was, so the run's weights are the same as without it. A
    conditional model is built for one placeholder attribute: its data's names are checked with the data."""
    import torch

    from celebgan.gan.module import attribute_kwargs

    with torch.random.fork_rng(devices=[]):
        instantiate(model_cfg, **attribute_kwargs(model_cfg, ["attribute"], [0.5])).configure_optimizers()


class Session(NamedTuple):
    cfg: DictConfig  # the config the run is built from: cfg, or a resumed run's with its own folder
    run_dir: Path
    ckpt_path: str | None  # the checkpoint resumed, or None
    saved: dict | None  # its stored run config


@contextmanager
def session(cfg: DictConfig) -> Iterator[Session]:
    """The run folder is this process's while the run lasts (celebgan.run.lock), and a resumed run's
    lines go on in its own log; both are released however the run ends."""
    from celebgan.run import resume
    from celebgan.run.plugins import trust_modules

    trust_modules(cfg.get("trust"))  # the reader's choice, before a checkpoint is read
    ckpt_path, original_run, saved = resume.resolve(cfg.get("resume"), OmegaConf.to_container(cfg, resolve=True))
    if ckpt_path is not None:
        resume.check_epochs(ckpt_path, cfg.trainer.get("max_epochs"))
    run_dir = Path(cfg.paths.output_dir)
    if original_run is not None:  # continue in the run's own folder: one TensorBoard run, one last.ckpt
        run_dir = Path(original_run)
        # Every path of the run (checkpoints, grids, the logger's folder) follows paths.output_dir:
        # the resumed run's config is cfg with its output folder, and cfg itself is left as composed.
        cfg = OmegaConf.merge(cfg, {"paths": {"output_dir": str(run_dir)}})
    with ExitStack() as run_end:
        # Before anything is read or written: a folder in use by another process stops the run here.
        run_end.enter_context(lock.owned(run_dir))
        if original_run is not None:
            run_end.enter_context(logging_into(run_dir))
            log.info("%s", resume.resuming_message(ckpt_path, run_dir))
        run_end.enter_context(warnings.catch_warnings())
        # The EMA generator's eval mode is the GAN's own (GAN.train): it is only ever sampled from.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
        yield Session(cfg, run_dir, ckpt_path, saved)


class Built(NamedTuple):
    datamodule: L.LightningDataModule
    model: GAN
    callbacks: list[L.Callback]  # every callback the Trainer holds, in its order
    trainer: L.Trainer
    logger: L.pytorch.loggers.Logger | None  # the config's (the Trainer holds a dummy under fast_dev_run)
    config: dict  # the run config that ran: RunConfig stores it, the HParams table shows it


def build(cfg: DictConfig, *, callbacks: Sequence[L.Callback] = ()) -> Built:
    """What a run trains with, from its config: the one place that instantiates it. `callbacks` go
    after the config's and the run's own (the session's RunFolderWatch, a test's probes)."""
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.callbacks import TQDMProgressBar

    from celebgan.gan.module import attribute_kwargs, conditional_config
    from celebgan.run import resume
    from celebgan.run.callbacks import PlainModelSummary
    from celebgan.run.checkpoint import AtomicCheckpointIO, RunConfig
    from celebgan.run.guards import DivergenceWatch, NonFiniteGuard
    from celebgan.run.hparams import SessionEnd

    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    conditional = conditional_config(cfg.model)
    # A conditional model on data.attributes=null conditions on every attribute the data has.
    take_all = conditional and cfg.data.get("attributes") is None
    datamodule = instantiate(cfg.data, **({"attributes": "all"} if take_all else {}))
    datamodule.setup("fit")  # a missing or malformed dataset, or an attribute it lacks, fails here
    check_readable(datamodule.train_set)
    note_attributes(conditional, take_all, datamodule.attr_names)
    model = instantiate(cfg.model, **attribute_kwargs(cfg.model, datamodule.attr_names, datamodule.attr_frequencies()))
    if conditional:  # the label rows the unnamed attributes of a request are drawn from
        model.use_label_table(datamodule.label_table())
    config = ran(cfg, datamodule.attr_names if conditional else None)
    # `callbacks.NAME=null` turns one callback off, as Hydra users write it; `callbacks=[]` all of them.
    built = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    # The guards first: at an epoch's end they stop a diverged run before its grid is drawn.
    built.sort(key=lambda c: not isinstance(c, (NonFiniteGuard, DivergenceWatch)))
    # The look of what trainer.enable_progress_bar and enable_model_summary turn on: tqdm's bar and
    # the plain table without its FLOPs (0s), also where rich is installed (which Lightning would
    # otherwise pick). Whether they show is the config's (conf/trainer/default.yaml).
    if cfg.trainer.get("enable_progress_bar", True):
        built.append(TQDMProgressBar())
    if cfg.trainer.get("enable_model_summary", True):
        built.append(PlainModelSummary())
    built += [RunConfig(config=config), resume.RNGState(), resume.ResumePosition(), SessionEnd(),
              resume.TrainingPhase(), *callbacks]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    try:
        # enable_model_summary=False: the summary, when the config asks for one, is PlainModelSummary
        # above; Lightning then neither adds its own nor says that it skips it.
        trainer = hydra.utils.instantiate(cfg.trainer, callbacks=built, logger=logger, plugins=[AtomicCheckpointIO()],
                                          enable_model_summary=False, **max_steps_kwargs(cfg, model))
    except InstantiationException as err:
        # Devices this machine lacks, an unknown accelerator or precision: Lightning's own message.
        if isinstance(err.__cause__, (MisconfigurationException, ValueError, ImportError)):
            t = cfg.trainer
            raise UserError(f"The trainer config (trainer.accelerator={t.get('accelerator')}, devices={t.get('devices')}, "
                            f"strategy={t.get('strategy')}, precision={t.get('precision')}) cannot run here: {err.__cause__} "
                            "Change the setting it names.") from None
        raise
    return Built(datamodule, model, built, trainer, logger or None, config)


def ran(cfg: DictConfig, attr_names: Sequence[str] | None) -> dict:
    """The resolved run config with the values that ran where the composed one leaves them to the
    run: a conditional model's data.attributes are the names the data module chose (null: all it
    has). trainer.max_steps stays in training steps, the unit the user gave it in."""
    config = OmegaConf.to_container(cfg, resolve=True)
    if attr_names is not None:
        config["data"]["attributes"] = list(attr_names)
    return config


@contextmanager
def stops_explained(trainer: L.Trainer, model: GAN, run_dir: Path,
                    folder_id: tuple[int, int] | None = None) -> Iterator[None]:
    """The ways a fit ends that are no bug, each one line and its exit status, not a traceback: the run
    folder deleted (folder_id: RunFolderWatch's, which tells a folder made anew from the run's), a stop
    signal (last.ckpt saved), a DDP peer that died."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from celebgan.run import resume
    from celebgan.run.guards import folder_deleted

    try:
        yield
    except (SIGTERMException, Exception) as err:
        if not isinstance(err, SIGTERMException) and lock.lost(run_dir):
            # RunFolderWatch's stop, or the write that found it first (TensorBoard's writer): one message.
            raise folder_deleted(run_dir, model.steps_done, folder_id) from err
        if resume.stopped_by_signal(trainer, err):
            # resume.SaveOnSignal saved last.ckpt; not finished, so not status 0: 128 + the signal's number
            if trainer.is_global_zero:
                log.info("%s", summary(trainer, run_dir, stopped=True))
            raise SystemExit(resume.stop_status(trainer)) from None
        message = peer_died_message(err, trainer.global_rank, trainer.world_size) \
            if isinstance(err, RuntimeError) else None
        if message is None:
            raise
        # Status 1, a failure's, as the traceback this replaces had: nothing to fix in the command
        # (2), and no checkpoint was saved on the way out (143).
        log.error("%s", message)
        raise SystemExit(1) from None


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured model on the configured data; returns the final logged metrics. It reads
    cfg and never writes it: what differs between machines is resolved in the config
    (conf/resolvers.py), and a resumed run's own folder is a config derived from cfg."""
    from celebgan.run import resume
    from celebgan.run.guards import RunFolderWatch
    from celebgan.run.hparams import log_hparams

    preflight(cfg)
    with session(cfg) as run, RunFolderWatch(run.run_dir) as watch:
        datamodule, model, _, trainer, logger, config = build(run.cfg, callbacks=[watch])
        if run.saved is not None:
            resume.check_attributes(run.ckpt_path, run.saved, config)
        for folder in {c.dirpath for c in trainer.checkpoint_callbacks if getattr(c, "dirpath", None)}:
            remove_stale_temporaries(folder, log)  # what a killed run left mid-write
        if logger is not None:
            log_hparams(logger, config, group_choices(), swept_keys())
        log.info("Run directory: %s", run.run_dir)
        startup.hand_over()
        with stops_explained(trainer, model, run.run_dir, watch.folder_id):
            trainer.fit(model, datamodule=datamodule, ckpt_path=run.ckpt_path, weights_only=True)
        if trainer.is_global_zero:
            log.info("%s", summary(trainer, run.run_dir))
        return {k: float(v) for k, v in trainer.callback_metrics.items()}


@contextmanager
def removed_if_unused(run_dir: Path, log_name: str) -> Iterator[None]:
    """A command that ends before its first training step (a missing dataset, a bad setting, Ctrl-C,
    a stop signal: startup.guard) leaves no run folder behind: Hydra's copy of the config and the
    log, and TensorBoard's declaration of the run, are all it would hold; the console showed the
    first two, and the third would list a run with no data in TensorBoard."""
    try:
        yield
    except BaseException:
        if run_dir.is_dir() and holds_only_startup_files(run_dir, log_name):
            shutil.rmtree(run_dir, ignore_errors=True)
            remove_empty_parents(run_dir)
        raise


def remove_empty_parents(run_dir: Path) -> None:
    """The folders Hydra made above a removed run folder (outputs/runs/), while they are empty, up to
    the current directory: a failed first command leaves the checkout as it found it."""
    top = Path.cwd().resolve()
    for parent in run_dir.resolve().parents:
        if parent == top or top not in parent.parents:
            return
        try:
            parent.rmdir()  # only an empty folder
        except OSError:
            return


EXCLUDE_KEYS = "hydra.job.config.override_dirname.exclude_keys"


def unnamed_keys() -> list[str]:
    """Keys that never name a sweep job's folder (where the data lives, what hardware a job runs on):
    the exclude_keys of conf/hydra/default.yaml, which a sweep that sets no list of its own keeps."""
    return list(OmegaConf.select(OmegaConf.load(CONFIG_DIR / "hydra" / "default.yaml"),
                                 EXCLUDE_KEYS.removeprefix("hydra.")))


def sweep_folder_overrides(args: Sequence[str]) -> list[str]:
    """The Hydra override that names each job folder of a --multirun sweep by its swept keys alone
    (`3_data=celeba64,model=vanilla`): a key given one value on the command line is the same in every
    job, so it is left out of hydra.job.override_dirname, as are unnamed_keys(). Hydra knows which keys
    were swept only in the launching process; as an override, the list reaches every job under any
    launcher (local, submitit). [] when the command is not a sweep or sets the list itself."""
    if not {"-m", "--multirun"} & set(args) or any(a.startswith(EXCLUDE_KEYS) for a in args):
        return []
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("-")])
    except OverrideParseException:
        return []  # Hydra reports the bad override itself
    fixed = {o.key_or_group for o in overrides if not o.is_sweep_override() and not o.is_hydra_override()}
    keys = sorted(fixed | set(unnamed_keys()))
    return [f"{EXCLUDE_KEYS}=[{','.join(repr(k) for k in keys)}]"]


def processes(trainer_cfg: DictConfig) -> int:
    """How many training processes share this machine's CPUs: DDP's ranks (trainer.devices=N)."""
    devices = trainer_cfg.get("devices", 1)
    return devices if isinstance(devices, int) and devices > 1 else 1


@command("config")
def hydra_main(cfg: DictConfig) -> float | None:
    """The command; returns the final optimized_metric, which a sweeper (search=optuna) minimises."""
    # Lightning's own use of a torch API that torch deprecated: nothing a user can act on.
    warnings.filterwarnings("ignore", message=LEAFSPEC_WARNING)
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # lock.HydraRunLock took run_dir before Hydra wrote into it (a --multirun job takes it here).
    with startup.guarded(), removed_if_unused(run_dir, f"{hydra_cfg.job.name}.log"), lock.owned(run_dir):
        if lock.owns_runs():  # what runs killed while they started left beside this one
            lock.remove_abandoned(run_dir.parent, f"{hydra_cfg.job.name}.log", own=run_dir)
        lightning_logs_once()  # the first import of Lightning: seconds, which Ctrl-C may cut short
        from celebgan.devices import use_threads  # torch: once the command runs, not for --help

        use_threads(cfg.threads, processes(cfg.trainer))
        quiet_lightning()  # Lightning's lines that say nothing about the run (run/lightning_compat.py)
        metrics = train(cfg)
    if cfg.get("resume") is not None and holds_only_startup_files(run_dir, f"{hydra_cfg.job.name}.log"):
        shutil.rmtree(run_dir, ignore_errors=True)  # a resume: the run went on in its own folder, and its log too
    elif hydra_cfg.mode == RunMode.MULTIRUN:  # a row of the sweep's closing table (run.sweep)
        write_job_summary(run_dir, hydra_cfg.job.override_dirname, metrics)
    metric = cfg.get("optimized_metric")
    # NaN when the run ended before its first measurement: Optuna records the trial as failed.
    return metrics.get(metric, float("nan")) if metric else None


def main() -> None:
    sys.argv += sweep_folder_overrides(sys.argv[1:])  # read by Hydra's own command-line parser
    hydra_main()


if __name__ == "__main__":
    main()
