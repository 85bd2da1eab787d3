"""Training curves of a run: `python -m celebgan.plot run=RUN_DIR [out=PATH] [smoothing=0.9]`.

Reads the run's TensorBoard event files and draws two panels, the D and G losses and the
discriminator's outputs D(x) and D(G(z)), as a PNG (default RUN_DIR/training_curves.png).
Drawn with Pillow, so plotting needs nothing beyond the training dependencies.
"""
import math
import os
from pathlib import Path

from omegaconf import DictConfig
from PIL import Image, ImageDraw, ImageFont

from celebgan.cli import command
from celebgan.errors import UserError
from celebgan.io import atomic_write


# Panels: (title, y range or None for the data's, [(tag, label, colour)]).
PANELS = [
    ("Losses", None, [
        ("train/d_loss", "D loss", (31, 119, 180)),
        ("train/g_loss", "G loss", (255, 127, 14)),
    ]),
    ("Discriminator outputs", (0.0, 1.0), [
        ("train/D_x", "D(x)", (44, 160, 44)),
        ("train/D_G_z1", "D(G(z)) before D step", (214, 39, 40)),
        ("train/D_G_z2", "D(G(z)) in G step", (148, 103, 189)),
    ]),
]
WIDTH, HEIGHT_PER_PANEL = 900, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 36


def read_scalars(run: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every scalar in a run's TensorBoard logs (in RUN_DIR)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # slow to import

    run = Path(run).expanduser()
    events = sorted(run.rglob("events.out.tfevents.*")) if run.is_dir() else []
    if not events:
        raise UserError(f"No TensorBoard event files under run={str(run)!r}: point run at the directory "
                        "of a celebgan.train run (it holds events.out.tfevents.*).")
    acc = EventAccumulator(str(events[0].parent), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's debiased exponential moving average: GAN losses are too noisy to read raw."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i) if weight > 0 else v)
    return out


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def step_ticks(x_max: float, n: int = 5) -> list[int]:
    """Round steps for the x-axis from 0 to x_max: multiples of 1, 2 or 5 times a power of ten,
    about n of them (0, 2000, 4000, 6000 for 7019 steps, where equal fifths read 1755, 3510, ...)."""
    if x_max < 1:
        return [0]
    rough = x_max / (n + 1)
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= rough)
    step = max(int(step), 1)
    return list(range(0, int(x_max) + 1, step))


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}"


def draw_panel(draw: ImageDraw.ImageDraw, top: int, title: str, y_range, series, smoothing: float,
               font, x_max: int, x_label: str = "training step (batch)") -> None:
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, top + TOP, top + HEIGHT_PER_PANEL - BOTTOM
    values = [v for _, _, _, points in series for _, v in points]
    lo, hi = y_range or (min(values), max(values))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5

    def px(step: float, value: float) -> tuple[float, float]:
        return x0 + (x1 - x0) * step / max(x_max, 1), y1 - (y1 - y0) * (value - lo) / (hi - lo)

    draw.text((x0, top + 6), title, fill="black", font=font)
    for v in _ticks(lo, hi):
        y = px(0, v)[1]
        draw.line([(x0, y), (x1, y)], fill=(225, 225, 225))
        draw.text((x0 - 6, y), _fmt(v), fill="black", font=font, anchor="rm")
    for s in step_ticks(x_max):
        x = px(s, lo)[0]
        draw.line([(x, y1), (x, y1 + 4)], fill="black")
        draw.text((x, y1 + 6), f"{s:.0f}", fill="black", font=font, anchor="ma")
    draw.text(((x0 + x1) / 2, y1 + 20), x_label, fill="black", font=font, anchor="ma")
    draw.rectangle([x0, y0, x1, y1], outline="black")
    for i, (_, label, colour, points) in enumerate(series):
        steps = [s for s, _ in points]
        raw = [min(max(v, lo), hi) for _, v in points]
        faint = tuple(int(c + (255 - c) * 0.7) for c in colour)
        if len(points) > 1:
            draw.line([px(s, v) for s, v in zip(steps, raw)], fill=faint, width=1)
            draw.line([px(s, v) for s, v in zip(steps, smooth(raw, smoothing))], fill=colour, width=2)
    # The legend runs along the title line, right-aligned above the frame: inside it, it would
    # cover the curves (D(x) sits near 1, at the top).
    lx = x1
    for _, label, colour, _ in reversed(series):
        lx -= draw.textlength(label, font=font)
        draw.text((lx, top + 6), label, fill="black", font=font)
        draw.line([(lx - 26, top + 12), (lx - 6, top + 12)], fill=colour, width=3)
        lx -= 44


def plot_run(run: str | os.PathLike, out: str | os.PathLike | None = None, smoothing: float = 0.9) -> Path:
    """Draw a run's loss and D-output curves into a PNG; returns its path."""
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing < 1.0:
        raise UserError(f"smoothing={smoothing!r} must be a number in [0, 1); 0 draws the raw values only.")
    scalars = read_scalars(run)
    missing = [tag for _, _, series in PANELS for tag, _, _ in series if not scalars.get(tag)]
    if missing:
        raise UserError(f"The logs of run={str(run)!r} lack {missing}; they hold {sorted(scalars)}. "
                        "Is this a celebgan.train run that got through at least one step?")
    x_max = max(s for _, _, series in PANELS for tag, _, _ in series for s, _ in scalars[tag])
    font = ImageFont.load_default(12)
    image = Image.new("RGB", (WIDTH, HEIGHT_PER_PANEL * len(PANELS)), "white")
    draw = ImageDraw.Draw(image)
    for i, (title, y_range, series) in enumerate(PANELS):
        draw_panel(draw, i * HEIGHT_PER_PANEL, title, y_range,
                   [(tag, label, colour, scalars[tag]) for tag, label, colour in series], smoothing, font, x_max)
    out = Path(out) if out is not None else Path(run) / "training_curves.png"
    with atomic_write(out) as tmp:
        image.save(tmp, format="png")
    return out


@command("plot")
def main(cfg: DictConfig) -> None:
    print(f"Wrote {plot_run(str(cfg.run), cfg.out, cfg.smoothing)}")


if __name__ == "__main__":
    main()
