"""``RUN/progress.png``: training loss, validation metric and learning rate against the step.

Like nnU-Net's ``progress.png``: the top panel shows the training loss (left axis) and the
validation metric (``val_dice`` for the UNet, ``val_psnr`` for diffusion; right axis), the
middle one the learning rate, the bottom one the seconds per step. Drawn with matplotlib's Agg
backend (no display needed), imported lazily: matplotlib is the optional extra
``volseg[plot]``; without it :func:`plot_available` is False and no plot is written. The PNG is
written to a temporary sibling and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PLOT_FILE = "progress.png"


def plot_available() -> bool:
    """Whether matplotlib can be imported (the ``plot`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def read_records(metrics_file: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (unreadable lines are skipped)."""
    records = []
    path = Path(metrics_file)
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], r[key]) for r in records
             if isinstance(r.get(key), (int, float)) and r[key] == r[key]]
    return [p[0] for p in pairs], [float(p[1]) for p in pairs]


def draw_progress(records: list[dict[str, Any]], path: str | os.PathLike, *,
                  metric: str = "val_dice", title: str = "") -> Path:
    """Draw ``records`` (``metrics.jsonl`` rows) into the PNG ``path`` (atomically).

    Parameters
    ----------
    records : list of dict
        Rows with ``step``, ``loss``, ``lr``, ``seconds`` and, at validation steps, ``metric``.
    path : path
        The PNG to write.
    metric : str
        The validation key drawn on the right axis of the top panel.
    title : str
        Figure title (e.g. the run directory).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 9), dpi=100, layout="constrained")
    ax_loss, ax_lr, ax_time = fig.subplots(3, 1, sharex=True)
    steps, loss = _series(records, "loss")
    ax_loss.plot(steps, loss, color="tab:blue", label="training loss")
    ax_loss.set_ylabel("loss")
    ax_loss.grid(alpha=0.3)
    handles = ax_loss.get_legend_handles_labels()
    val_steps, val = _series(records, metric)
    if val:
        ax_val = ax_loss.twinx()
        ax_val.plot(val_steps, val, color="tab:green", marker="o", markersize=3, label=metric)
        ax_val.set_ylabel(metric)
        more = ax_val.get_legend_handles_labels()
        handles = (handles[0] + more[0], handles[1] + more[1])
    ax_loss.legend(*handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)
    lr_steps, lr = _series(records, "lr")
    ax_lr.plot(lr_steps, lr, color="tab:orange")
    ax_lr.set_ylabel("learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax_lr.grid(alpha=0.3)
    timing = [(r["step"], r["seconds"]) for r in records if isinstance(r.get("seconds"), (int, float))]
    per_step = [(b[0], (b[1] - a[1]) / (b[0] - a[0])) for a, b in zip(timing, timing[1:])
                if b[0] > a[0] and b[1] >= a[1]]
    if per_step:
        ax_time.plot([p[0] for p in per_step], [p[1] for p in per_step], color="tab:purple")
    ax_time.set_ylabel("seconds / step")
    ax_time.set_xlabel("step")
    ax_time.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
