"""The judge of a conditional generator's obedience: a small CNN that learns the attributes from real
images and their labels (CelebA's list_attr, or the synthetic faces' labels), trained once per data
set and recipe and cached, and `Judge`, which scores a generator with it (metrics/obedience.py's
questions). `celebgan.sample mode=attributes` labels generated faces with the same classifier to find
latent directions (gan/directions.py).

The run's real faces are read by a function passed in (`ReadSplit`, run.checkpoint.real_subset
for every caller): reading a checkpoint's data checks what it may build, which sits above this wing.
"""
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from celebgan.data.batches import loader_workers
from celebgan.data.modules import dataset_name
from celebgan.data.synthetic import RENDERER_VERSION
from celebgan.errors import UserError, check_number, check_whole
from celebgan.gan.images import independent_conditions, latents
from celebgan.gan.labels import LabelTable
from celebgan.gan.module import GAN
from celebgan.io import atomic_write, format_duration
from celebgan.metrics.obedience import consistent_obedience, in_model_order, judge_accuracy, judge_columns, obedience

log = logging.getLogger(__name__)

# (config {"data": the run's data config}, split, n, seed) -> (at most n real faces of the split as
# (image, labels) pairs, a seeded subset; the names of the labels): run.checkpoint.real_subset.
ReadSplit = Callable[[dict[str, Any], str, int, int], tuple[Dataset, list[str]]]


def check_classifier(key: str, settings: dict[str, Any]) -> None:
    """The classifier's settings (sample's direction.classifier, evaluate's obedience.classifier):
    counts >= 1 and a learning rate > 0, before anything is generated or trained."""
    for name in ("max_train", "max_eval", "epochs", "batch_size", "width"):
        if name in settings:
            check_whole(f"{key}.{name}", settings[name], 1)
    if "lr" in settings:
        check_number(f"{key}.lr", settings["lr"], 0, above=True)


def check_obedience(settings: dict[str, Any], key: str = "obedience") -> None:
    """Judge's settings, checked where a command starts rather than once its other metrics are done."""
    check_whole(f"{key}.n", settings.get("n", 0), 0, " (0 turns obedience off)")
    for name, minimum in (("n_ceiling", 1), ("seed", 0), ("batch_size", 1)):
        if name in settings:
            check_whole(f"{key}.{name}", settings[name], minimum)
    check_classifier(f"{key}.classifier", dict(settings.get("classifier") or {}))

# Data settings that change how images are served, not which images and labels there are (the
# classifier learns every attribute the data has, whichever data.attributes a model chose).
# The synthetic faces' num_images, cache_dir and on_device neither: the classifier renders its own
# max_train faces of the split, the same first faces whatever the run trained on.
LOADER_KEYS = {"split", "flip", "batch_size", "num_workers", "pin_memory", "attributes", "num_images", "cache_dir",
               "on_device"}
# The classifier's architecture and training recipe: a change to either changes every cache key
# (fingerprint), so a judge trained by an older recipe is never read back as today's.
RECIPE_VERSION = 2


class AttributeClassifier(nn.Module):
    """(B, 3, S, S) in [-1, 1] -> (B, num_attrs) logits: three stages of two 3x3 convs (the second of
    each with stride 2), then the 4 x 4 map flattened into the head, so that where a feature lies
    (a fringe on the forehead, hair above it or none) counts, not only that it is there. Width 32
    at 32px: about 0.3M weights, trained in minutes on a CPU thread (benchmarks/RESULTS.md, judge)."""

    def __init__(self, *, num_attrs: int, width: int = 32):
        super().__init__()
        layers, c_in = [], 3
        for c_out in (width, 2 * width, 4 * width):
            for stride in (1, 2):
                layers += [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
                c_in = c_out
        # 4 x 4 whatever the image size (16px: each 2 x 2 cell repeated; 64px: 8 x 8 averaged).
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(16 * c_in, num_attrs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def fingerprint(data_config: dict[str, Any], classifier: dict[str, Any]) -> str:
    """A short hash of what decides the classifier: the dataset (root made absolute, image size,
    crop, ...) and the classifier's own settings."""
    data = {k: v for k, v in data_config.items() if k not in LOADER_KEYS}
    if data.get("root") is not None:
        data["root"] = str(Path(data["root"]).expanduser().resolve())
    if dataset_name(data) == "Synthetic":  # new pixels, new classifier
        data["renderer_version"] = RENDERER_VERSION
    blob = json.dumps({"data": data, "classifier": classifier, "recipe": RECIPE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def labelled_split(read: ReadSplit, data_config: dict[str, Any], split: str, max_images: int, seed: int):
    """(dataset of (image, labels), attribute names), at most max_images of a split, seeded subset."""
    dataset, attr_names = read({"data": data_config}, split, max_images, seed)
    if not attr_names:
        raise UserError("The attributes mode needs attribute labels, and this run's dataset has none. "
                        "For CelebA, put list_attr_celeba.txt (or the Kaggle .csv) next to the images.")
    return dataset, attr_names


def _loader(dataset, batch_size: int, num_workers: int, shuffle: bool, seed: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed) if shuffle else None)


class TrainingProgress:
    """The classifier's progress while it trains: an estimate of its time from the first batches, then
    a line every `every_s` seconds (tqdm's bar shows only on a terminal; a log file or CI gets these)."""

    def __init__(self, total_images: int, *, first_batches: int = 5, every_s: float = 30.0):
        self.total, self.first_batches, self.every_s = total_images, first_batches, every_s
        self.done = self.batches = self.counted = 0
        self.start = self.last = time.monotonic()

    def step(self, images: int) -> None:
        self.done += images
        self.batches += 1
        now = time.monotonic()
        if self.batches == 1:  # the first batch pays for the workers' start: timed from its end
            self.start, self.counted = now, self.done
            return
        rate = (self.done - self.counted) / max(now - self.start, 1e-9)
        left = (self.total - self.done) / max(rate, 1e-9)
        if self.batches == self.first_batches:
            log.info("Attribute classifier: %.0f images/s on its first batches, so about %s for its training "
                     "(an estimate)", rate, format_duration(left + now - self.start))
            self.last = now
        elif self.batches > self.first_batches and (now - self.last >= self.every_s or self.done >= self.total):
            log.info("Attribute classifier: %d/%d images trained (%.0f images/s, about %s left)",
                     self.done, self.total, rate, format_duration(left))
            self.last = now


def split_labels(dataset) -> torch.Tensor | None:
    """(N, C) labels of a labelled split without reading its images, where the dataset keeps them
    as a table (the synthetic faces, CelebA's list_attr; a seeded Subset of either); None otherwise."""
    if isinstance(dataset, Subset):
        table = split_labels(dataset.dataset)
        return None if table is None else table[torch.as_tensor(dataset.indices, dtype=torch.long)]
    table = getattr(dataset, "attrs", None)
    return torch.as_tensor(table) if table is not None else None


def positive_weights(labels: torch.Tensor) -> torch.Tensor:
    """(C,) BCE pos_weight = negatives / positives of each attribute (1 where a side is empty): a rare
    attribute (Bald: 1 face in 9) weighs its few positives as much as its many negatives, so the
    logit's 0 is the balanced-accuracy threshold, the one obedience judges by."""
    positives = labels.float().sum(0)
    negatives = len(labels) - positives
    return torch.where((positives > 0) & (negatives > 0), negatives / positives.clamp(min=1), torch.ones(()))


def balanced_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy (C,), balanced accuracy (C,): the mean of the shares right on faces with and
    without each attribute; a side with no face counts as right) of (N, C) logits against 0/1 labels."""
    said, truth = logits > 0, labels.bool()
    with_ = (said & truth).sum(0) / truth.sum(0).clamp(min=1)
    without = (~said & ~truth).sum(0) / (~truth).sum(0).clamp(min=1)
    with_ = torch.where(truth.any(0), with_, torch.ones(()))
    without = torch.where((~truth).any(0), without, torch.ones(()))
    return (said == truth).float().mean(0), (with_ + without) / 2


def fit_classifier(model: AttributeClassifier, batches, *, steps: int, lr: float, pos_weight: torch.Tensor,
                   device: torch.device | str = "cpu", progress: "TrainingProgress | None" = None) -> None:
    """The recipe (RECIPE_VERSION): AdamW (weight decay 1e-4) with a one-cycle learning rate
    (a 10% warm-up to lr, then cosine to 0) over `steps` batches of (images, labels); each image
    mirrored at random (every attribute of a face is left-right symmetric); BCE weighted per
    attribute (positive_weights)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    pos_weight = pos_weight.to(device)
    model.train()
    for images, labels in batches:
        if progress is not None:
            progress.step(len(images))
        images = images.to(device)
        mirror = torch.rand(len(images), device=images.device) < 0.5
        images = torch.where(mirror[:, None, None, None], images.flip(-1), images)
        loss = F.binary_cross_entropy_with_logits(model(images), labels.to(device).float(), pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    model.eval()


def train_classifier(data_config: dict[str, Any], *, read: ReadSplit, max_train: int, max_eval: int, epochs: int,
                     batch_size: int, lr: float, width: int, seed: int = 0,
                     device: torch.device | str = "cpu") -> dict[str, Any]:
    """Fit the classifier on the train split; its accuracy per attribute on the held-out test split.
    Returns the cache record: state_dict, attr_names, width, accuracy, balanced (balanced accuracy),
    majority (the accuracy of always answering the more common label, the bar to beat), seconds."""
    torch.manual_seed(seed)
    train_set, attr_names = labelled_split(read, data_config, "train", max_train, seed)
    test_set, _ = labelled_split(read, data_config, "test", max_eval, seed)
    workers = loader_workers(data_config.get("num_workers", 0))  # `auto` resolved on this machine
    model = AttributeClassifier(num_attrs=len(attr_names), width=width).to(device)
    table = split_labels(train_set)
    if table is None:  # labels only with their images: one pass to count them
        table = torch.cat([labels for _, labels in _loader(train_set, batch_size, workers, False)])
    log.info("Attribute classifier: training a small CNN (width %d) on %d labelled images of the train split "
             "for %d epoch(s), then measuring it on %d of the test split", width, len(train_set), epochs,
             len(test_set))
    began = time.monotonic()
    progress = TrainingProgress(len(train_set) * epochs)

    def batches():
        for epoch in range(epochs):
            yield from tqdm(_loader(train_set, batch_size, workers, True, seed + epoch),
                            disable=not sys.stderr.isatty(), desc=f"attribute classifier, epoch {epoch + 1}/{epochs}",
                            unit="batch", leave=False)
    fit_classifier(model, batches(), steps=epochs * -(-len(train_set) // batch_size), lr=lr,
                   pos_weight=positive_weights(table), device=device, progress=progress)
    seconds = time.monotonic() - began
    logits, truth = [], []
    with torch.no_grad():
        for images, labels in _loader(test_set, batch_size, workers, False):
            logits.append(model(images.to(device)).cpu())
            truth.append(labels)
    logits, truth = torch.cat(logits), torch.cat(truth)
    accuracy, balanced = balanced_accuracy(logits, truth)
    positives = truth.float().mean(0)
    majority = torch.maximum(positives, 1 - positives)
    log.info("Attribute classifier: trained in %s; balanced accuracy on %d held-out faces: %s",
             format_duration(seconds), len(truth),
             ", ".join(f"{n} {b:.3f}" for n, b in zip(attr_names, balanced.tolist())))
    return {
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        "attr_names": attr_names,
        "width": width,
        "recipe": RECIPE_VERSION,
        "accuracy": dict(zip(attr_names, accuracy.tolist())),
        "balanced": dict(zip(attr_names, balanced.tolist())),
        "majority": dict(zip(attr_names, majority.tolist())),
        "num_train": len(train_set),
        "num_eval": len(truth),
        "seconds": seconds,
    }


def cached_classifier(data_config: dict[str, Any], cache_dir: str | Path, settings: dict[str, Any],
                      device: torch.device | str = "cpu", *,
                      read: ReadSplit) -> tuple[AttributeClassifier, dict[str, Any]]:
    """(classifier in eval mode, its record), trained on first use for this dataset, then read back;
    read: how the run's real faces are read (ReadSplit)."""
    path = Path(cache_dir).expanduser() / f"attr_classifier_{fingerprint(data_config, settings)}.pt"
    record = None
    if path.is_file():
        try:
            record = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a damaged cache is rebuilt, never fatal
            log.warning("Retraining the attribute classifier: cache %s is unreadable (%s)", path, err)
    if record is None:
        log.info("Training the attribute classifier first: it labels the generated faces. Up to %d real images "
                 "for %d epoch(s) (obedience.classifier.*, or sample's direction.classifier.*); once for this "
                 "dataset, then read from %s",
                 settings.get("max_train"), settings.get("epochs"), path)
        record = train_classifier(data_config, read=read, device=device, **settings)
        with atomic_write(path) as tmp:
            torch.save(record, tmp)
    model = AttributeClassifier(num_attrs=len(record["attr_names"]), width=record["width"])
    model.load_state_dict(record["state_dict"])
    return model.to(device).eval(), {**record, "path": path}


class Judge:
    """The attribute classifier as the judge of a conditional generator's obedience
    (celebgan.metrics.obedience): trained once per data set and cached, as for mode=attributes.

    data_config: the run's data config (the classifier's data set); cache_dir, classifier: where it
    is cached and train_classifier's settings; n: generated faces per attribute and side; n_ceiling:
    held-out real faces (test split) its own balanced accuracy, the ceiling, is measured on; seed:
    the latents and the other attributes of the faces it judges, the same at every call; read: how the
    run's real faces are read (ReadSplit), handed in by whoever builds it (QualityMetrics, evaluate).
    """

    # n has no default: evaluation judges 500 faces per side (conf/evaluate.yaml), training 200 (conf/metrics/).
    def __init__(self, *, data_config: Any, cache_dir: str | Path, classifier: dict[str, Any], n: int, read: ReadSplit,
                 n_ceiling: int = 2000, seed: int = 0, batch_size: int = 256):
        # Config nodes when Hydra builds it (metrics.obedience), dicts from a checkpoint's config.
        to_dict = lambda c: OmegaConf.to_container(c, resolve=True) if OmegaConf.is_config(c) else dict(c)  # noqa: E731
        self.data_config, self.classifier = to_dict(data_config), to_dict(classifier)
        check_obedience({"n": n, "n_ceiling": n_ceiling, "seed": seed, "batch_size": batch_size,
                         "classifier": self.classifier})
        self.cache_dir, self.n, self.n_ceiling, self.seed, self.batch_size = cache_dir, n, n_ceiling, seed, batch_size
        self.read = read
        self.model: AttributeClassifier | None = None
        self.ceiling: dict | None = None

    def cost(self, num_attrs: int) -> str:
        return (f"obedience: 2 requests (consistent, independent) x 2 sides x {self.n} generated faces x {num_attrs} "
                f"attributes = {4 * self.n * num_attrs:,} images through the attribute classifier per evaluation, "
                f"its ceiling once on {self.n_ceiling} held-out real faces")

    def prepare(self, names: list[str], device: torch.device | str = "cpu") -> dict:
        """Load (or train and cache) the classifier and measure its ceiling; returns the ceiling."""
        path = Path(self.cache_dir).expanduser() / f"attr_classifier_{fingerprint(self.data_config, self.classifier)}.pt"
        first = "" if path.is_file() else (
            f"; first the classifier trains, once for this data set: {self.classifier.get('max_train')} real images x "
            f"{self.classifier.get('epochs')} epochs, then cached")
        log.info("Attribute-conditional %s%s.", self.cost(len(names)), first)
        self.model, record = cached_classifier(self.data_config, self.cache_dir, self.classifier, device,
                                               read=self.read)
        self.names, self.judge_names, self.device = list(names), record["attr_names"], device
        judge_columns(self.names, self.judge_names)  # a classifier of another data set fails here
        test_set, _ = labelled_split(self.read, self.data_config, "test", self.n_ceiling, self.seed)
        self.ceiling = judge_accuracy(self.classify, _loader(test_set, self.batch_size, 0, False),
                                      self.names, self.judge_names)
        # Label rows to ask for when the model keeps no table of its training split (an older
        # checkpoint): the held-out faces' own, in the model's attribute order.
        held_out = split_labels(test_set)
        if held_out is None:
            held_out = torch.cat([labels for _, labels in _loader(test_set, self.batch_size, 0, False)])
        self.held_out_table = LabelTable.from_labels(in_model_order(held_out, self.judge_names, self.names))
        return self.ceiling

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.to(self.device))

    def __call__(self, gan: GAN) -> dict:
        """The obedience of `gan`'s sampler (EMA, eval mode) to consistent requests (per_attribute,
        mean: label rows of its training split that have each attribute and rows that lack it), and
        to independent ones (independent: the attribute set in rows drawn each from its frequency),
        with the judge's ceiling beside them."""
        if self.model is None:
            self.prepare(gan.attr_names, gan.device)
        z = latents(self.n, gan.generator.nz, self.seed)
        table = gan.label_table if gan.label_table is not None else self.held_out_table

        def asked(column: int, value: float) -> torch.Tensor | None:
            # A generator of each attribute and side's own: the same rows at every evaluation.
            generator = torch.Generator().manual_seed(self.seed + 1 + 2 * column + int(value))
            return table.draw(self.n, {column: value}, generator)
        scores = consistent_obedience(gan.sample, self.classify, gan.attr_names, self.judge_names, z, asked,
                                      batch_size=self.batch_size)
        independent = obedience(gan.sample, self.classify, gan.attr_names, self.judge_names, z,
                                independent_conditions(gan, self.n, self.seed), batch_size=self.batch_size)
        asked_from = "training label rows" if gan.label_table is not None else "held-out label rows (no table kept)"
        return scores | {"independent": independent, "ceiling": self.ceiling, "asked_from": asked_from}
