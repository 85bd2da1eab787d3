"""Obedience of an attribute-conditional generator: does a face asked for an attribute show it?

A classifier trained on real faces and their labels is the judge. For each attribute, faces are
generated from the same latents asked to have the attribute and asked not to; `with` is the share
of the first the judge labels as having it, `without` the share of the second it labels as not
having it, and `balanced` their mean (balanced accuracy: 0.5 is a
generator that ignores the attribute, 1 one that always obeys). The judge's own balanced accuracy
on held-out real faces (`judge_accuracy`) is the ceiling: a generator cannot be seen to obey
better than the judge sees.

Two questions are asked (`consistent_obedience`, the headline figure, and `obedience`, kept beside
it): consistent requests are real label rows that have the attribute and rows that lack it (drawn
from the training split's label table), so "blond" is never asked together with "black hair";
independent requests set the attribute in rows whose other attributes are drawn each from its own
frequency, often combinations the data never holds and the generator never saw.

The generator and the judge are passed in as functions, so this file depends on neither:
    generate(z (B, nz, 1, 1), labels (B, A) float 0/1 in the model's attribute order) -> (B, 3, S, S) in [-1, 1]
    classify(images (B, 3, S, S) in [-1, 1]) -> (B, C) logits in the judge's attribute order
"""
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from celebgan.errors import UserError

Generate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Classify = Callable[[torch.Tensor], torch.Tensor]


def judge_columns(names: Sequence[str], judge_names: Sequence[str]) -> list[int]:
    """The judge's column of each of the model's attributes."""
    missing = [name for name in names if name not in judge_names]
    if missing:
        raise UserError(f"The attribute classifier knows {list(judge_names)}, not the model's {missing}: it "
                        "was trained on another data set than the model.")
    return [list(judge_names).index(name) for name in names]


def summary(per_attribute: dict[str, dict[str, float | None]]) -> dict:
    """{"per_attribute": ..., "mean": the mean balanced accuracy over the attributes that have one}."""
    values = [v["balanced"] for v in per_attribute.values() if v["balanced"] is not None]
    return {"per_attribute": per_attribute, "mean": sum(values) / len(values) if values else None}


def _agreement(generate: Generate, classify: Classify, column: int, z: torch.Tensor, asked: torch.Tensor | None,
               value: float, batch_size: int) -> float | None:
    """The share of the faces of latents z asked for `asked` (N, A) whose judge column says `value`;
    None when nothing was asked (no label row to ask with)."""
    if asked is None:
        return None
    agree = 0
    for zb, lb in zip(z.split(batch_size), asked.float().split(batch_size)):
        said = classify(generate(zb, lb)).float().cpu()[:, column] > 0
        agree += int((said == bool(value)).sum())
    return agree / len(z)


def _scores(with_: float | None, without: float | None) -> dict[str, float | None]:
    balanced = (with_ + without) / 2 if with_ is not None and without is not None else None
    return {"with": with_, "without": without, "balanced": balanced}


@torch.no_grad()
def obedience(generate: Generate, classify: Classify, names: Sequence[str], judge_names: Sequence[str],
              z: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 256) -> dict:
    """Obedience to independent requests: per attribute {"with", "without", "balanced"} and their
    mean, from len(z) faces per attribute and side (2 * len(names) * len(z) images in all).

    z: (N, nz, 1, 1) latents; labels: (N, A) 0/1 conditions of the other attributes (drawn each
    from its training frequency), in the model's attribute order; each attribute's column is set
    to 1, then 0, over the same latents and other attributes. Such rows are often ones the data never
    holds (blond and black-haired at once): `consistent_obedience` asks only for rows it holds."""
    columns = judge_columns(names, judge_names)
    per_attribute = {}
    for i, (name, j) in enumerate(zip(names, columns)):
        asked = {}
        for value in (1.0, 0.0):
            asked[value] = labels.clone().float()
            asked[value][:, i] = value
        per_attribute[name] = _scores(*(_agreement(generate, classify, j, z, asked[v], v, batch_size)
                                        for v in (1.0, 0.0)))
    return summary(per_attribute)


@torch.no_grad()
def consistent_obedience(generate: Generate, classify: Classify, names: Sequence[str], judge_names: Sequence[str],
                         z: torch.Tensor, asked: Callable[[int, float], torch.Tensor | None], *,
                         batch_size: int = 256) -> dict:
    """Obedience to consistent requests: per attribute, faces asked for label rows the data holds
    that have it (`asked(i, 1.0)`, (N, A)) and rows that lack it (`asked(i, 0.0)`), the judge's share
    of agreement on each side and their mean; the mean over attributes. A side with no row to ask
    (None: no training face has, or lacks, the attribute) has no share and no balanced accuracy."""
    columns = judge_columns(names, judge_names)
    per_attribute = {}
    for i, (name, j) in enumerate(zip(names, columns)):
        per_attribute[name] = _scores(*(_agreement(generate, classify, j, z, asked(i, v), v, batch_size)
                                        for v in (1.0, 0.0)))
    return summary(per_attribute)


@torch.no_grad()
def judge_accuracy(classify: Classify, batches: Iterable, names: Sequence[str],
                   judge_names: Sequence[str]) -> dict:
    """The ceiling: the judge's {"with", "without", "balanced"} per attribute on real faces, from
    (images (B, 3, S, S) in [-1, 1], labels (B, C) 0/1 in the judge's order) batches. A share with
    no face to count (an attribute no held-out face has) is None."""
    columns = judge_columns(names, judge_names)
    agree, count = torch.zeros(2, len(columns)), torch.zeros(2, len(columns))
    for images, labels in batches:
        said = classify(images).float().cpu()[:, columns] > 0
        truth = labels[:, columns].bool()
        agree += torch.stack([(said & truth).sum(0), (~said & ~truth).sum(0)])  # row 0: faces with it
        count += torch.stack([truth.sum(0), (~truth).sum(0)])
    per_attribute = {}
    for k, name in enumerate(names):
        with_, without = ((agree[s, k] / count[s, k]).item() if count[s, k] else None for s in (0, 1))
        balanced = (with_ + without) / 2 if with_ is not None and without is not None else None
        per_attribute[name] = {"with": with_, "without": without, "balanced": balanced}
    return summary(per_attribute)


def matching(labels: torch.Tensor, judge_names: Sequence[str], condition: Mapping[str, float]) -> torch.Tensor:
    """(N,) bool: the faces whose labels (N, C, in judge_names' order) have every value of `condition`
    ({name: 0 or 1}): the real side of a per-condition FID."""
    keep = torch.ones(len(labels), dtype=torch.bool)
    for name, value in condition.items():
        keep &= labels[:, list(judge_names).index(name)].bool() == bool(value)
    return keep


def in_model_order(labels: torch.Tensor, judge_names: Sequence[str], names: Sequence[str]) -> torch.Tensor:
    """(N, C) labels in the judge's (the data set's) order -> (N, A) float in the model's: real faces'
    label sets as conditions, so that generated faces are asked for what the real ones have."""
    return labels[:, judge_columns(names, judge_names)].float()
