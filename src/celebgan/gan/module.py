"""The GAN LightningModule: alternating D and G steps under manual optimization."""
import copy
import functools
import inspect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext

import torch
import torch.distributed as dist
from lightning import LightningModule
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from celebgan.gan import clock
from celebgan.gan.augment import DiffAugment
from celebgan.errors import UserError, check_number, check_whole
from celebgan.gan.labels import LabelTable
from celebgan.gan.losses import attribute_bce, d_bce, g_nonsaturating

log = logging.getLogger(__name__)

# The checkpoint's key of a conditional GAN's label table (LabelTable.to_plain: plain tensors).
TABLE_KEY = "celebgan_label_table"


def plain_partial(fn: Callable) -> Callable:
    """A Hydra partial as a plain functools.partial. Hydra's own re-checks its target policy on
    every call (about 2 ms on a CPU), too slow for a function called every training step."""
    if isinstance(fn, functools.partial):
        return functools.partial(fn.func, *fn.args, **fn.keywords)
    return fn


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_optimizer_settings(key: str, settings: Mapping) -> None:
    """lr and betas, in words a user can act on (torch says "'<=' not supported" for lr=fast)."""
    lr = settings.get("lr", 1.0)
    if not (_number(lr) and lr >= 0):  # 0 freezes that network, a control experiment
        raise UserError(f"model.{key}.lr={lr!r} must be a number >= 0 (the DCGAN paper's is 2e-4).")
    betas = settings.get("betas", (0.0, 0.0))
    if not (isinstance(betas, Sequence) and len(betas) == 2 and all(_number(b) and 0 <= b < 1 for b in betas)):
        shown = list(betas) if isinstance(betas, Sequence) and not isinstance(betas, str) else betas
        raise UserError(f"model.{key}.betas={shown!r} must be two numbers in [0, 1): Adam's decay rates of "
                        "its gradient's mean and square (the DCGAN paper's are [0.5, 0.999]).")


def conditional_config(model_cfg: Mapping) -> bool:
    """Whether a model config generates attributes on demand: one of its networks takes `num_attrs`
    (conf/model/projection.yaml, acgan.yaml), which is set from the data (attribute_kwargs)."""
    return any("num_attrs" in (model_cfg.get(net) or {}) for net in ("generator", "discriminator"))


def attribute_kwargs(model_cfg: Mapping, attr_names: Sequence[str],
                     attr_frequencies: Sequence[float] | None = None) -> dict:
    """The instantiate kwargs that build a conditional model config for its data's attributes: the
    GAN's attr_names and attr_frequencies, and num_attrs of each network that takes it. The config
    itself stays as composed; an unconditional config gets none (it ignores the attributes)."""
    if not conditional_config(model_cfg):
        return {}
    kwargs: dict = {"attr_names": list(attr_names)}
    if attr_frequencies is not None:
        kwargs["attr_frequencies"] = [float(f) for f in attr_frequencies]
    for net in ("generator", "discriminator"):
        if "num_attrs" in (model_cfg.get(net) or {}):
            kwargs[net] = {"num_attrs": len(attr_names)}
    return kwargs


class GAN(LightningModule):
    """DCGAN training (Radford et al. 2016) with an EMA of the generator for samples and metrics.

    generator / discriminator: the networks (Hydra builds them from model.generator / .discriminator).
    g_optimizer / d_optimizer: partial optimizers, bound to each network's parameters here.
    d_loss / g_loss: the objective, functions of D's logits from celebgan.gan.losses (config group
        model/loss). A G loss with a `real_logits` parameter (RpGAN) also gets D's real logits.
    penalties: named gradient penalties from celebgan.gan.penalties (model/penalty), each added to the D
        loss on one D step in its `every`, times `every`.
    augment: a DiffAugment policy ([color, translation, cutout]) applied to every image D sees; [] is off.
    n_dis: D steps per G step; each D step takes a fresh real batch (WGAN-GP's critic iterations).
    ema_half_life: half-life of the generator EMA in images (StyleGAN's 10k); 0 turns EMA off.
    ema_rampup: early on, the half-life is at most this fraction of the images seen so far, so the
        EMA does not drag the random initial weights along (StyleGAN's 0.05); null disables it.
    num_fixed / fixed_seed: the latent batch drawn once for every progress grid of the run.
    instance_noise / instance_noise_steps: std of Gaussian noise added to every image D sees (real
        and fake, in [-1, 1] units), annealed linearly to 0 over that many training steps; 0 is off.
    lr_scheduler: a partial LR scheduler, one built per optimizer and stepped once per training step
        (e.g. StepLR, or LinearLR to 0 over the run: total_iters None is the run's length); None keeps
        the learning rates constant.
    compile: torch.compile G and D (in place: checkpoints keep their plain parameter names).
    gradient_clip_val, gradient_clip_algorithm: clip G's and D's gradients (by "norm" or "value")
        before each of their steps (model.gradient_clip_*: Lightning clips only under automatic optimization).
    attr_names: the attributes a conditional GAN generates on demand (the data module's chosen
        data.attributes, in its column order), kept in the checkpoint's hyperparameters; () for an
        unconditional GAN, which ignores the batches' attributes. Set by celebgan.train from the data.
    attr_frequencies: each attribute's share of the training split (A,), kept as a buffer: labels
        drawn for unnamed attributes follow the data when the GAN has no label table (a checkpoint
        written before it was kept). None: 0.5 each.
    aux_weight: weight of AC-GAN's attribute classifier loss, for a D that returns attribute logits.

    A training step is one real batch: one D step, and a G step on every n_dis-th. A conditional GAN
    asks G for the labels of the real batch, fake i for those of real face i, so the labels G
    learns from follow the data's joint distribution, and D (projection) sees the same labels with
    the real and the fake half. celebgan.train then gives it the training split's label table
    (use_label_table), kept in the checkpoint: labels drawn for it (draw_labels, the fixed grid's,
    a request's unnamed attributes) are rows the data holds.
    """

    def __init__(
        self,
        *,
        generator: nn.Module,
        discriminator: nn.Module,
        g_optimizer: Callable[..., torch.optim.Optimizer],
        d_optimizer: Callable[..., torch.optim.Optimizer],
        d_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = d_bce,
        g_loss: Callable[..., torch.Tensor] = g_nonsaturating,
        penalties: Mapping[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]] | None = None,
        augment: str | Sequence[str] = (),
        n_dis: int = 1,
        ema_half_life: float = 10_000,
        ema_rampup: float | None = 0.05,
        num_fixed: int = 64,
        fixed_seed: int = 0,
        instance_noise: float = 0.0,
        instance_noise_steps: int = 0,
        lr_scheduler: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler] | None = None,
        compile: bool = False,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
        attr_names: Sequence[str] = (),
        attr_frequencies: Sequence[float] | None = None,
        aux_weight: float = 1.0,
    ):
        super().__init__()
        if generator.img_size != discriminator.img_size:
            raise UserError(f"generator.img_size={generator.img_size} differs from "
                            f"discriminator.img_size={discriminator.img_size}.")
        # Each setting against its meaning: a negative half-life or count is a mistake, never "off".
        check_whole("model.n_dis", n_dis, 1, " (D steps per G step)")
        check_number("model.ema_half_life", ema_half_life, 0, note=" (images; 0 turns the EMA off)")
        check_number("model.ema_rampup", ema_rampup, 0, above=True, optional=True, note=" (null turns it off)")
        check_whole("model.num_fixed", num_fixed, 1, " (the faces of the progress grid)")
        check_whole("model.fixed_seed", fixed_seed, 0)
        check_number("model.instance_noise", instance_noise, 0, note=" (0 is off)")
        check_whole("model.instance_noise_steps", instance_noise_steps, 0)
        if instance_noise > 0 and instance_noise_steps == 0:
            raise UserError(f"model.instance_noise={instance_noise} is on, so model.instance_noise_steps (the "
                            "training steps it anneals to 0 over) must be > 0 (got 0).")
        check_number("model.gradient_clip_val", gradient_clip_val, 0, above=True, optional=True,
                     note=" (null is off)")
        check_number("model.aux_weight", aux_weight, 0)
        try:
            self.augment = DiffAugment(augment or ())
        except ValueError as err:
            raise UserError(f"model.augment={list(augment) if not isinstance(augment, str) else augment!r}: "
                            f"{err}.") from None
        attr_names = [str(name) for name in attr_names]
        for key, network in (("generator", generator), ("discriminator", discriminator)):
            if getattr(network, "num_attrs", 0) not in (0, len(attr_names)):
                raise UserError(f"model.{key} is built for {network.num_attrs} attributes, but the GAN is given "
                                f"{len(attr_names)} ({', '.join(attr_names) or 'none'}).")
        self.save_hyperparameters(ignore=["generator", "discriminator", "g_optimizer", "d_optimizer", "d_loss",
                                          "g_loss", "penalties", "lr_scheduler", "attr_frequencies"], logger=False)
        self.automatic_optimization = False
        # channels_last: the memory format whose convolution kernels are fastest on tensor cores
        # and in oneDNN on CPU; inputs are converted to it in training_step.
        generator.to(memory_format=torch.channels_last)
        discriminator.to(memory_format=torch.channels_last)
        self.generator, self.discriminator = generator, discriminator
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.d_loss_fn, self.g_loss_fn = plain_partial(d_loss), plain_partial(g_loss)
        self.g_loss_needs_real = "real_logits" in inspect.signature(g_loss).parameters
        real_label = getattr(self.d_loss_fn, "keywords", {}).get("real_label", 1.0)
        if not 0.0 < real_label <= 1.0:
            raise UserError(f"model.d_loss.real_label={real_label} must lie in (0, 1]; 0.9 is one-sided "
                            "label smoothing.")
        self.penalties = dict(penalties or {})
        self.attr_names, self.aux_weight = attr_names, aux_weight
        self.n_dis = n_dis
        self.lr_scheduler = lr_scheduler
        self.instance_noise, self.instance_noise_steps = instance_noise, instance_noise_steps
        self.ema_half_life, self.ema_rampup = ema_half_life, ema_rampup
        self.generator_ema = copy.deepcopy(generator).requires_grad_(False).eval() if ema_half_life > 0 else None
        self.epoch_totals: dict[str, tuple[torch.Tensor, int]] = {}  # name -> (sum, steps) this epoch
        seeded = torch.Generator().manual_seed(fixed_seed)
        fixed_z = torch.randn(num_fixed, generator.nz, 1, 1, generator=seeded)
        self.register_buffer("fixed_z", fixed_z)  # (N, nz, 1, 1), saved with the weights
        # A conditional GAN's attribute buffers are saved with the weights; an unconditional one's
        # are empty and not saved, so its checkpoints keep the keys they always had.
        num_attrs = len(attr_names)
        frequencies = torch.full((num_attrs,), 0.5) if attr_frequencies is None else \
            torch.as_tensor(attr_frequencies, dtype=torch.float32).reshape(num_attrs)
        self.register_buffer("attr_frequencies", frequencies, persistent=num_attrs > 0)  # (A,)
        # The grid's labels: drawn once from the frequencies, after fixed_z from the same seed.
        fixed_labels = torch.bernoulli(frequencies.expand(num_fixed, num_attrs), generator=seeded)
        self.register_buffer("fixed_labels", fixed_labels, persistent=num_attrs > 0)  # (N, A) float 0/1
        # The training split's label rows and their counts (celebgan.gan.labels), set by celebgan.train
        # from the data and kept in the checkpoint beside the weights (TABLE_KEY); None: a checkpoint
        # written before it was kept, whose unnamed attributes are drawn each from its frequency.
        self.label_table: LabelTable | None = None
        if compile:
            generator.compile()
            discriminator.compile()

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None,
                             weights_only=None, **kwargs):
        """Lightning's loader, which rebuilds the module from its saved hyperparameters: G, D, their
        optimizers and the objective are not among them (Hydra builds them from the run config), so
        they must be passed as keyword arguments. celebgan.run.checkpoint.load_gan(path) rebuilds all of
        them from the config the checkpoint carries."""
        required = ("generator", "discriminator", "g_optimizer", "d_optimizer")
        missing = [name for name in required if name not in kwargs]
        if missing:
            raise TypeError(
                f"GAN.load_from_checkpoint({str(checkpoint_path)!r}) cannot rebuild {', '.join(missing)}: a "
                "celebgan checkpoint stores the run config they are built from, not the objects. Use "
                "`from celebgan.run.checkpoint import load_gan; gan, config = load_gan(path)`, or pass "
                "generator=, discriminator=, g_optimizer=, d_optimizer= (and d_loss=, g_loss= for an "
                "objective other than BCE) yourself.")
        # Tensors and plain containers only (Lightning reads a URL with weights_only=False), and no
        # `_instantiator` from the file's hyperparameters: they reach GAN() as values, nothing else.
        return super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, strict, weights_only=True,
                                            _instantiator=None, **kwargs)

    @property
    def steps_done(self) -> int:
        """Training steps (real batches) completed so far in the run: the run's clock (gan.clock)."""
        return clock.training_steps(self.trainer.global_step, self.n_dis)

    # Lightning's global_step and max_steps count optimizer steps; gan.clock holds the conversions.
    optimizer_steps = staticmethod(clock.optimizer_steps)
    training_steps = staticmethod(clock.training_steps)

    @property
    def img_size(self) -> int:
        return self.generator.img_size

    def train(self, mode: bool = True) -> "GAN":
        # The EMA generator is only sampled from (in eval mode: `sample`) and takes its BatchNorm
        # statistics from G: it never trains, and says so in the model summary.
        super().train(mode)
        if self.generator_ema is not None:
            self.generator_ema.eval()
        return self

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.label_table is not None:
            checkpoint[TABLE_KEY] = self.label_table.to_plain()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get(TABLE_KEY) is not None and self.conditional:
            self.label_table = LabelTable.from_plain(checkpoint[TABLE_KEY], len(self.attr_names))

    @property
    def conditional(self) -> bool:
        """Whether G generates on demand the attributes `attr_names` (G(z, labels))."""
        return bool(self.attr_names)

    def use_label_table(self, table: LabelTable | None) -> None:
        """Keep the training split's label table (celebgan.train, from the data) and draw the
        progress grid's labels from it: rows the data holds (a resumed run then loads its own)."""
        self.label_table = table
        if table is not None and self.conditional:
            seeded = torch.Generator().manual_seed(self.hparams.fixed_seed)
            self.fixed_labels.copy_(table.draw(len(self.fixed_labels), None, seeded))

    def draw_labels(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, A) float labels in {0, 1} on the module's device: label rows of the training split, as
        often as it holds them (its label table), or, for a checkpoint without one, each attribute
        drawn independently with its training frequency (CPU draws: a seeded `generator` gives the
        same ones everywhere)."""
        if self.label_table is not None:
            return self.label_table.draw(n, None, generator).to(self.attr_frequencies.device)
        frequencies = self.attr_frequencies.cpu().expand(n, len(self.attr_names))
        return torch.bernoulli(frequencies, generator=generator).to(self.attr_frequencies.device)

    @property
    def sampler(self) -> nn.Module:
        """The generator that grids, metrics and sampling use: the EMA copy when there is one."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    @torch.no_grad()
    def sample(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, nz[, 1, 1]) latents -> (B, 3, S, S) images in [-1, 1], from the sampler in eval mode.
        labels: (B, A) in {0, 1} for a conditional GAN; None draws them (draw_labels, the global RNG)."""
        g = self.sampler
        was_training = g.training
        if self.conditional:
            labels = (self.draw_labels(len(z)) if labels is None else labels).to(self.device, torch.float32)
        g.eval()
        try:
            return g(z.to(self.device), labels).float()
        finally:
            g.train(was_training)

    def configure_optimizers(self):
        optimizers = []
        for key, make, network in (("g_optimizer", self.g_optimizer, self.generator),
                                   ("d_optimizer", self.d_optimizer, self.discriminator)):
            settings = getattr(make, "keywords", {})
            check_optimizer_settings(key, settings)
            if "betas" in settings:  # torch's Adam wants both floats; `betas.0=0` on a command line is an int
                make = functools.partial(make, betas=tuple(float(b) for b in settings["betas"]))
            try:  # torch checks the other settings here: the first moment they are seen
                optimizers.append(make(network.parameters()))
            except (ValueError, TypeError) as err:
                raise UserError(f"model.{key}: {err}. Fix that setting of model.{key}.") from None
        if self.lr_scheduler is None:
            return optimizers
        # Lightning saves and restores the schedulers with the checkpoint; stepping is ours (manual),
        # once per training step, the run's one clock. LinearLR with total_iters None decays over the
        # run's length in training steps: trainer.max_steps or max_epochs, whichever ends it first.
        make = self.lr_scheduler
        if getattr(make, "func", None) is torch.optim.lr_scheduler.LinearLR and make.keywords.get("total_iters") is None:
            # Before a Trainer (the preflight's check of the settings) the length is not known yet.
            make = functools.partial(make, total_iters=self.run_length() if self._trainer is not None else 1)
        return optimizers, [make(opt) for opt in optimizers]

    def known_length(self) -> int | None:
        """The training steps the run ends after (None: nothing limits it), known once the Trainer
        has its training data."""
        self.trainer.estimated_stepping_batches  # noqa: B018  sets up the training data: batches per epoch
        return clock.run_steps(self.trainer, self.n_dis)

    def run_length(self) -> int:
        """The training steps the run ends after; an error where nothing limits it."""
        steps = self.known_length()
        if steps is None:
            raise UserError("lr_schedule=linear decays to 0 over the run, but neither trainer.max_steps nor "
                            "trainer.max_epochs limits it: set one, or model.lr_scheduler.total_iters (training steps).")
        return steps

    def on_train_start(self) -> None:
        # A run resumed with a longer length keeps the schedule it began with (its checkpoint's): say
        # where a LinearLR ends, so that no one trains on at a learning rate of 0 without knowing.
        for scheduler in self.lr_schedulers() or []:
            if isinstance(scheduler, torch.optim.lr_scheduler.LinearLR) and self.trainer.is_global_zero:
                end, length = scheduler.total_iters, self.known_length()
                if length is not None and length > end:
                    log.warning(
                        f"lr_schedule=linear reached its end factor ({scheduler.end_factor:g} of each learning rate) "
                        f"at training step {end:,}, the length this run began with, and stays there until it ends "
                        f"at step {length:,}: a resumed run keeps its schedule. To decay over the longer run, start "
                        f"it afresh with that length (or set model.lr_scheduler.total_iters).")
                break  # one per optimizer, all alike

    def on_train_epoch_start(self) -> None:
        self.epoch_totals = {}

    def on_train_epoch_end(self) -> None:
        # `train_epoch/NAME`: each step value's mean over the epoch's steps that logged it (the HParams
        # table's final values), averaged over the processes.
        means = {"train_epoch/" + name.removeprefix("train/"): total / steps
                 for name, (total, steps) in self.epoch_totals.items()}
        self.log_dict(means, on_step=False, on_epoch=True, sync_dist=True)

    def instance_noise_std(self, step: int) -> float:
        """The instance-noise std at training step `step`: linear from instance_noise down to 0."""
        if self.instance_noise == 0:
            return 0.0
        return self.instance_noise * max(0.0, 1.0 - step / self.instance_noise_steps)

    def noisy(self, images: torch.Tensor, std: float) -> torch.Tensor:
        # Blurs the real and fake distributions into overlap, so D cannot separate them perfectly
        # early on (Sonderby et al. 2017). No draw at all when off: the seeds' runs stay exact.
        return images + std * torch.randn_like(images) if std > 0 else images

    def d_view(self, images: torch.Tensor, noise_std: float) -> torch.Tensor:
        """Images as D sees them: augmented (DiffAugment), then instance-noised."""
        return self.noisy(self.augment(images) if self.augment else images, noise_std)

    def score(self, images: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's real/fake logits (B,), and its attribute logits (B, A) when D has AC-GAN's classifier
        (it returns both), else None."""
        out = self.discriminator(images, labels)
        return out if isinstance(out, tuple) else (out, None)

    def d_logits(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.score(images, labels)[0]

    def batch_labels(self, batch) -> torch.Tensor | None:
        """The batch's attributes as G's and D's (B, A) float labels; None for an unconditional GAN."""
        if not self.conditional:
            return None
        attrs = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        if attrs is None or attrs.dim() != 2 or attrs.size(1) != len(self.attr_names):
            got = "none" if attrs is None else tuple(attrs.shape)
            raise UserError(f"The GAN is conditioned on {len(self.attr_names)} attributes "
                            f"({', '.join(self.attr_names)}), but the batch's attributes have shape {got}: "
                            "train it on data with those data.attributes.")
        return attrs.float()

    def training_step(self, batch, batch_idx: int) -> None:
        real = batch[0] if isinstance(batch, (tuple, list)) else batch  # (B, 3, S, S) in [-1, 1]
        real = real.contiguous(memory_format=torch.channels_last)  # a no-op for the batch loaders' output
        labels = self.batch_labels(batch)  # (B, A) float 0/1, or None: fake i is asked for real i's
        g_opt, d_opt = self.optimizers()
        step = self.steps_done
        g_step = (step + 1) % self.n_dis == 0
        z = torch.randn(real.size(0), self.generator.nz, 1, 1, device=real.device)
        with torch.set_grad_enabled(g_step):  # no graph through G on D-only steps
            fake = self.generator(z, labels)  # one forward, reused: detached for D, attached for G
        noise_std = self.instance_noise_std(step)
        logs = {}

        # Optimize discriminator: a real and a separate fake mini-batch, losses summed.
        with self.toggled_optimizer(d_opt):
            d_real_in, d_fake_in = self.d_view(real, noise_std), self.d_view(fake.detach(), noise_std)
            d_real_logits, d_real_attr_logits = self.score(d_real_in, labels)
            d_fake_logits, _ = self.score(d_fake_in, labels)
            d_loss = self.d_loss_fn(d_real_logits, d_fake_logits)
            logs["train/d_loss"] = d_loss.detach()
            if d_real_attr_logits is not None:  # AC-GAN: the classifier learns the attributes from real faces
                aux = attribute_bce(d_real_attr_logits, labels)
                d_loss = d_loss + self.aux_weight * aux
                logs["train/d_aux"] = aux.detach()
            # D as the penalties call it, images -> logits (B,): a conditional D given the batch's labels
            # (the fakes have the real batch's labels, so real-fake mixtures, WGAN-GP's, share them too).
            d_of = self.discriminator if labels is None else functools.partial(self.d_logits, labels=labels)
            for name, penalty in self.penalties.items():
                if step % penalty.every == 0:
                    value = penalty(d_of, d_real_in, d_fake_in)
                    d_loss = d_loss + penalty.every * value
                    logs[f"train/penalty/{name}"] = value.detach()
            d_opt.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            self.average_gradients(self.discriminator)
            self.clip(d_opt)
            d_opt.step()

        # G's BatchNorm statistics, over each rank's own latents; after G's backward, which reads them.
        if not g_step:
            self.average_buffers(self.generator)
        # Optimize generator, on every n_dis-th step: the same fakes, scored by the updated D.
        if g_step:
            with self.toggled_optimizer(g_opt):
                g_fake_logits, g_fake_attr_logits = self.score(self.d_view(fake, noise_std), labels)
                if self.g_loss_needs_real:  # relativistic: D's view of the real batch, as of now
                    real_logits = self.d_logits(self.d_view(real, noise_std), labels)
                    g_loss = self.g_loss_fn(g_fake_logits, real_logits=real_logits)
                else:
                    g_loss = self.g_loss_fn(g_fake_logits)
                g_total = g_loss
                if g_fake_attr_logits is not None:  # AC-GAN: the fakes should show the asked-for attributes
                    aux = attribute_bce(g_fake_attr_logits, labels)
                    g_total = g_loss + self.aux_weight * aux
                    logs["train/g_aux"] = aux.detach()
                g_opt.zero_grad(set_to_none=True)
                self.manual_backward(g_total)
                self.average_gradients(self.generator)
                self.clip(g_opt)
                g_opt.step()
            # Batches are equal (drop_last); the EMA advances by the images of the n_dis steps.
            batch_images = real.size(0) * self.trainer.world_size
            self.average_buffers(self.generator)
            self.update_ema(clock.images(self.n_dis, batch_images), images_seen=clock.images(step + 1, batch_images))
            logs["train/g_loss"] = g_loss.detach()
            logs["train/D_G_z2"] = torch.sigmoid(g_fake_logits.detach()).mean()

        # D_x, D_G_z1 (fakes before the D update) and D_G_z2 (after it, as G sees them) follow
        # pytorch/examples' DCGAN printout. Tensors, not .item(): no host sync in the step.
        logs["train/D_x"] = torch.sigmoid(d_real_logits.detach()).mean()
        logs["train/D_G_z1"] = torch.sigmoid(d_fake_logits.detach()).mean()
        # `train/NAME` every step; one log call with on_step and on_epoch would suffix the names
        # (_step, _epoch). Their epoch means are summed here and logged once an epoch as
        # `train_epoch/NAME`: Lightning's log costs far more per name and step than an addition.
        for name, value in logs.items():
            total, steps = self.epoch_totals.get(name, (0.0, 0))
            self.epoch_totals[name] = (total + value.float(), steps + 1)
        losses = {k: logs.pop(k) for k in ("train/d_loss", "train/g_loss") if k in logs}
        self.log_dict(losses, on_step=True, on_epoch=False, prog_bar=True, sync_dist=True)
        self.log_dict(logs, on_step=True, on_epoch=False, sync_dist=True)
        # The learning rates this step used (a schedule changes them after each step), straight to the
        # loggers: plain floats, which self.log would turn into tensors on the device every step.
        if self.trainer.is_global_zero and step % self.trainer.log_every_n_steps == 0:
            lrs = {"train/lr_g": g_opt.param_groups[0]["lr"], "train/lr_d": d_opt.param_groups[0]["lr"]}
            for logger in self.loggers:
                logger.log_metrics(lrs, step=step)
        if self.instance_noise > 0:
            self.log("train/instance_noise_std", noise_std, on_step=True, on_epoch=False)
        for scheduler in self.lr_schedulers() or []:  # None without schedulers, else one per optimizer
            scheduler.step()

    def manual_backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        # DDP's reducer expects every parameter to get a gradient in every backward, but the D step
        # leaves G's untouched and the G step D's. Its sync is switched off here and each network's
        # gradients are averaged by average_gradients() instead, so any DDP flavour works
        # (find_unused_parameters true or false, ddp or ddp_spawn) with no strategy settings.
        model = self.trainer.strategy.model
        with model.no_sync() if isinstance(model, DistributedDataParallel) else nullcontext():
            super().manual_backward(loss, *args, **kwargs)

    @torch.no_grad()
    def clip(self, optimizer) -> None:
        """model.gradient_clip_val: Lightning clips gradients only under automatic optimization."""
        if self.hparams.gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val,
                                gradient_clip_algorithm=self.hparams.gradient_clip_algorithm or "norm")

    def average_gradients(self, network: nn.Module) -> None:
        """Average `network`'s gradients over the processes (one all-reduce); a no-op on one process."""
        world_size = self.trainer.world_size
        if world_size == 1 or not dist.is_available() or not dist.is_initialized():
            return
        grads = [p.grad for p in network.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world_size
        for g, avg in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(avg.view_as(g))

    @torch.no_grad()
    def average_buffers(self, network: nn.Module) -> None:
        """Average `network`'s floating-point buffers (BatchNorm's running statistics) over the
        processes, so that every rank holds the ones the checkpoint keeps (rank 0's) and samples as
        it does. The mean of the ranks' running variances leaves out the spread between the ranks'
        batch means: close to the global batch's variance, not equal to it. A no-op on one process,
        and under SyncBatchNorm (trainer.sync_batchnorm), whose statistics are the global batch's."""
        world_size = self.trainer.world_size
        if world_size == 1 or not dist.is_available() or not dist.is_initialized():
            return
        if any(isinstance(m, nn.SyncBatchNorm) for m in network.modules()):
            return
        buffers = [b for b in network.buffers() if b.is_floating_point()]
        if not buffers:
            return
        flat = torch.cat([b.reshape(-1) for b in buffers])
        dist.all_reduce(flat)
        flat /= world_size
        for b, avg in zip(buffers, flat.split([b.numel() for b in buffers])):
            b.copy_(avg.view_as(b))

    @torch.no_grad()
    def update_ema(self, batch_images: int, images_seen: int) -> None:
        """Move the EMA towards G: beta = 0.5 ** (batch_images / half_life)."""
        if self.generator_ema is None:
            return
        half_life = self.ema_half_life
        if self.ema_rampup is not None:
            half_life = min(half_life, images_seen * self.ema_rampup)
        beta = 0.5 ** (batch_images / max(half_life, 1e-8))
        torch._foreach_lerp_(list(self.generator_ema.parameters()), list(self.generator.parameters()), 1.0 - beta)
        # BatchNorm running statistics are copied, not averaged: they describe the live G.
        for b_ema, b in zip(self.generator_ema.buffers(), self.generator.buffers()):
            b_ema.copy_(b)
