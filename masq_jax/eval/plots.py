"""Plots people would rather look at than read: SQNR per layer and modality."""

from __future__ import annotations

from pathlib import Path


def plot_sqnr_per_layer(sqnr: dict, path: str | Path, title: str = "SQNR per decoder layer") -> str:
    """Line plot of per-layer SQNR for each modality present (and all tokens); returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sqnr["per_layer"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for key, style in (("all", "k-"), ("text", "C0-o"), ("vision", "C1-s"), ("audio", "C2-^")):
        ys = [r[key] for r in rows]
        if all(y is None for y in ys):
            continue
        ax.plot(range(len(rows)), [float("nan") if y is None else y for y in ys], style, label=key, ms=3)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("SQNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return str(path)
