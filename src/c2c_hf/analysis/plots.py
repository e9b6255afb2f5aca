"""Figures of the analyses' results: one `plot_<analysis>(result, path)` per analysis, collected in `PLOTS`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .caches import BRANCHES

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _figure(panels: int, integer_x: bool = False) -> tuple[Figure, list[Axes]]:
    """A bare figure of `panels` side-by-side axes (integer ticks on the first x axis for layer indices)."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg; no pyplot state
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(5.5 * panels, 4.2), layout="constrained")
    axes = [figure.add_subplot(1, panels, i + 1) for i in range(panels)]
    if integer_x:  # layer indices
        axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure, axes


def plot_enrichment(result: dict[str, Any], path: str | Path) -> None:
    """Per-example answer loss, own vs enriched prompt cache (free-form answers), and both accuracies."""
    figure, (losses, bars) = _figure(2)
    records = result["examples"]
    if "loss_delta" in result:
        plain, enriched = [r["plain"]["loss"] for r in records], [r["enriched"]["loss"] for r in records]
        losses.scatter(plain, enriched, s=12)
        low, high = min(plain + enriched), max(plain + enriched)
        losses.plot([low, high], [low, high], color="grey", lw=1, ls="--")
        losses.set_xlabel("answer loss, own prompt cache")
        losses.set_ylabel("answer loss, enriched prompt cache")
        losses.set_title(f"loss {result['plain']['loss']:.3f} -> {result['enriched']['loss']:.3f}")
    bars.bar(["own cache", "enriched cache"], [100 * result["plain"]["accuracy"], 100 * result["enriched"]["accuracy"]])
    bars.set_ylabel("accuracy (%)")
    bars.set_ylim(0, 100)
    bars.set_title(f"Cache enrichment oracle (n={result['n']})")
    figure.savefig(path, dpi=120)


def plot_transfer(result: dict[str, Any], path: str | Path) -> None:
    """Held-out reconstruction error per target layer (vs its baselines) and the loss decoded from each cache."""
    figure, (errors, decoding) = _figure(2, integer_x=True)
    for branch, style in zip(BRANCHES, ("-", "--")):
        r = result["reconstruction"][branch]
        layers = range(len(r["relative_mse"]))
        errors.plot(layers, r["relative_mse"], style, marker="o", label=f"{branch}: MLP")
        errors.plot(layers, r["mean_baseline_relative_mse"], style, color="grey", label=f"{branch}: training mean")
    errors.axhline(1.0, color="black", lw=1, label="zero map")
    errors.set_xlabel("target layer")
    errors.set_ylabel("held-out relative MSE")
    errors.legend(fontsize=8)
    names = list(result["decoding"])
    values = [result["decoding"][n].get("loss", 1 - result["decoding"][n]["accuracy"]) for n in names]
    decoding.bar_label(decoding.bar(names, values), fmt="%.3f")
    decoding.set_ylabel("target loss on the continuation")
    decoding.set_title("Cache transfer oracle: decoding from each cache")
    figure.savefig(path, dpi=120)


def plot_rank(result: dict[str, Any], path: str | Path) -> None:
    """Effective rank per receiver layer, own vs fused, for keys and values."""
    figure, (axes,) = _figure(1, integer_x=True)
    for branch, color in zip(BRANCHES, ("C0", "C1")):
        r = result[branch]
        axes.plot(r["original"], color=color, ls="--", marker="o", label=f"{branch} own ({r['original_mean']:.1f})")
        axes.plot(r["fused"], color=color, marker="s", label=f"{branch} fused ({r['fused_mean']:.1f})")
    axes.set_xlabel("receiver layer")
    axes.set_ylabel("effective rank")
    axes.set_title(f"Effective rank of the prompt cache ({result['sequences']} sequences)")
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=120)


def plot_progressive(result: dict[str, Any], path: str | Path) -> None:
    """Accuracy (and answer loss) against the fused fraction of the prompt cache, one line per side."""
    has_loss = any("loss" in point for curve in result["curves"].values() for point in curve)
    figure, panels = _figure(2 if has_loss else 1)
    for side, curve in result["curves"].items():
        fractions = [100 * p["fraction"] for p in curve]
        panels[0].plot(fractions, [100 * p["accuracy"] for p in curve], marker="o", label=f"fuse the {side} positions")
        if has_loss:
            panels[1].plot(fractions, [p["loss"] for p in curve], marker="o", label=f"fuse the {side} positions")
    panels[0].set_ylabel("accuracy (%)")
    panels[0].set_ylim(0, 100)
    if has_loss:
        panels[1].set_ylabel("answer loss")
    for axes in panels:
        axes.set_xlabel("fused prompt positions (%)")
        axes.legend(fontsize=8)
    panels[0].set_title(f"Progressive fusion (n={result['n']})")
    figure.savefig(path, dpi=120)


def plot_gates(result: dict[str, Any], path: str | Path) -> None:
    """Heat maps of the mean dynamic weight per receiver layer and KV head, with each layer's gate state."""
    import numpy as np

    figure, panels = _figure(2)
    for axes, branch in zip(panels, BRANCHES):
        rows = result["dynamic_weight"][branch]
        grid = np.array([[np.nan] * result["heads"] if r is None else r for r in rows], dtype=float)  # (T, H_r)
        image = axes.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        labels = [f"{t} {'open' if o else 'closed'}" for t, o in enumerate(result["open"][branch])]
        axes.set_yticks(range(len(labels)), labels, fontsize=7)
        axes.set_xticks(range(result["heads"]))
        axes.set_xlabel("receiver KV head")
        axes.set_ylabel("receiver layer (gate)")
        open_count = sum(result["open"][branch])
        axes.set_title(f"{branch}: dynamic weight, {open_count}/{len(labels)} gates open")
        figure.colorbar(image, ax=axes, fraction=0.05)
    figure.savefig(path, dpi=120)


PLOTS: dict[str, Callable[[dict[str, Any], str | Path], None]] = {
    "enrichment": plot_enrichment,
    "transfer": plot_transfer,
    "rank": plot_rank,
    "progressive": plot_progressive,
    "gates": plot_gates,
}


__all__ = ["PLOTS", "plot_enrichment", "plot_gates", "plot_progressive", "plot_rank", "plot_transfer"]
