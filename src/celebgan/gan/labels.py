"""The label table of a conditional GAN's training split: its distinct attribute rows and how many
faces hold each. A request that names some attributes draws the others from the rows that agree
with the named ones (the data's joint distribution given them), so a face asked to be blond is not
also asked to be black-haired; a request the data never holds is said to be so, with how often.

The table is kept in a checkpoint as plain tensors ({"rows": (K, A) uint8, "counts": (K,) int64},
`to_plain` / `from_plain`): it loads with weights_only=True and decides nothing but numbers.
"""
import logging
from collections.abc import Mapping, Sequence

import torch

from celebgan.errors import UserError

log = logging.getLogger(__name__)

# Two attributes whose faces share at most this fraction of the rarer one's faces are exclusive:
# switching one on switches the other off (the synthetic faces' hair colours, Bald and Bangs never
# meet). Above 0, so that a few mislabelled faces (real labels are noisy) do not make two attributes
# combinable; pairs combined more often than this are left as drawn, however rare.
EXCLUSIVE_SHARE = 0.01
# A named combination held by fewer than this share of the training faces is drawn as asked (from
# the few rows that hold it) with a warning: the model saw it too seldom to be trusted with it.
RARE_SHARE = 0.001


class LabelTable:
    """rows: (K, A) distinct 0/1 label rows in the model's attribute order; counts: (K,) faces of each."""

    def __init__(self, rows: torch.Tensor, counts: torch.Tensor):
        self.rows, self.counts = rows.to(torch.uint8).cpu(), counts.to(torch.int64).cpu()

    @classmethod
    def from_labels(cls, labels: torch.Tensor) -> "LabelTable":
        """From a split's (N, A) 0/1 labels."""
        rows, counts = torch.unique(labels.to(torch.uint8), dim=0, return_counts=True)
        return cls(rows.reshape(-1, labels.shape[1]), counts)

    def to_plain(self) -> dict[str, torch.Tensor]:
        return {"rows": self.rows.clone(), "counts": self.counts.clone()}

    @classmethod
    def from_plain(cls, plain, num_attrs: int, where: str = "the checkpoint") -> "LabelTable":
        """Back from to_plain's dict, checked as values: a table of another shape is a UserError."""
        rows = plain.get("rows") if isinstance(plain, Mapping) else None
        counts = plain.get("counts") if isinstance(plain, Mapping) else None
        ok = (isinstance(rows, torch.Tensor) and isinstance(counts, torch.Tensor) and rows.dim() == 2
              and rows.shape[1] == num_attrs and counts.shape == (rows.shape[0],) and not rows.is_floating_point()
              and not counts.is_floating_point() and bool(((rows == 0) | (rows == 1)).all())
              and bool((counts >= 0).all()))
        if not ok:
            raise UserError(f"The label table in {where} is not a table of {num_attrs} 0/1 attributes with a count per "
                            "row. The checkpoint is damaged or was not written by celebgan.train.")
        return cls(rows, counts)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def agreeing(self, fixed: Mapping[int, float]) -> torch.Tensor:
        """(K,) bool: the rows that hold every {column: 0 or 1} of `fixed`."""
        keep = torch.ones(len(self.rows), dtype=torch.bool)
        for column, value in fixed.items():
            keep &= self.rows[:, column] == int(value)
        return keep

    def faces_with(self, fixed: Mapping[int, float]) -> int:
        """How many training faces hold every value of `fixed`."""
        return int(self.counts[self.agreeing(fixed)].sum())

    def draw(self, n: int, fixed: Mapping[int, float] | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor | None:
        """(n, A) float rows drawn as often as the data holds them, among those that agree with
        `fixed`; None when no training face agrees."""
        weights = (self.counts * self.agreeing(fixed or {})).double()
        if weights.sum() == 0:
            return None
        index = torch.multinomial(weights, n, replacement=True, generator=generator) if n else \
            torch.zeros(0, dtype=torch.long)
        return self.rows[index].float()

    def together(self) -> torch.Tensor:
        """(A, A) faces holding both attribute i and j (the diagonal: faces holding i)."""
        weighted = self.rows.double() * self.counts[:, None].double()
        return (weighted.T @ self.rows.double()).round().long()

    def exclusive(self, column: int) -> list[int]:
        """The attributes that (almost) never meet `column`'s: at most EXCLUSIVE_SHARE of the rarer
        one's faces hold both. Attributes no face holds are left out (nothing to say about them)."""
        both = self.together()
        alone = both.diagonal()
        found = []
        for other in range(len(alone)):
            rarer = min(int(alone[column]), int(alone[other]))
            if other != column and rarer > 0 and both[column, other] <= EXCLUSIVE_SHARE * rarer:
                found.append(other)
        return found

    def switched(self, labels: torch.Tensor, column: int, value: float) -> torch.Tensor:
        """(N, A) rows with `column` set to `value` in a way the data allows: switched on, its exclusive
        attributes go off (a blond face is no longer black-haired); a row the data then never holds
        is replaced by the nearest one it does that has the value (fewest attributes changed, then
        the most common), so the other attributes change as little as the data permits."""
        out = labels.clone().float()
        out[:, column] = float(value)
        if value:
            out[:, self.exclusive(column)] = 0.0
        seen = self.counts > 0
        candidates = self.rows[seen & (self.rows[:, column] == int(value))].float()
        if not len(candidates):  # no face has (or lacks) it: nothing nearer to offer
            return out
        popularity = self.counts[seen & (self.rows[:, column] == int(value))].double()
        for i, row in enumerate(out):
            if not (candidates == row).all(1).any():
                distance = (candidates != row).sum(1).double() - popularity / (popularity.max() + 1)
                out[i] = candidates[distance.argmin()]
        return out

def request_text(fixed: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{name}: {int(value)}" for name, value in fixed.items()) + "}"


def draw_rows(table: LabelTable | None, names: Sequence[str], freqs: torch.Tensor, n: int,
              fixed: Mapping[str, float] | None, generator: torch.Generator | None,
              key: str = "attributes") -> torch.Tensor:
    """(n, A) float labels: the named ones as asked, the others drawn from the training faces that
    agree with them (the table), or, without a table or when no training face agrees, each from its
    frequency alone (freqs (A,)). A combination no training face holds is warned about, with its count."""
    fixed = dict(fixed or {})
    columns = {list(names).index(name): value for name, value in fixed.items()}
    if table is not None:
        rows = table.draw(n, columns, generator)
        if rows is not None:
            held = table.faces_with(columns)
            if columns and held < RARE_SHARE * table.total:
                log.warning("%s=%s: only %d of %s training faces hold this combination (%.2f%%), so the model saw it "
                            "seldom; its faces may not show it.", key, request_text(fixed), held, f"{table.total:,}",
                            100 * held / table.total)
            return rows
        singly = ", ".join(f"{name}: {table.faces_with({list(names).index(name): value}):,}"
                           for name, value in fixed.items())
        log.warning("%s=%s: no training face holds this combination (0 of %s; each alone: %s), so the model never "
                    "saw it; the attributes not named are drawn from their frequencies alone.", key,
                    request_text(fixed), f"{table.total:,}", singly)
    labels = torch.bernoulli(freqs.float().cpu().expand(n, len(names)), generator=generator)
    for column, value in columns.items():
        labels[:, column] = value
    return labels
