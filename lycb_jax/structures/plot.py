"""Figures of the structure workflows (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path


def plot_series(series: dict[str, list[dict]], path: str | Path) -> None:
    """Relaxed volume per atom (A^3/atom) vs x for each parent label, saved with matplotlib (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, rows in series.items():
        ax.plot([r["x"] for r in rows], [r["volume_per_atom"] for r in rows], "o-", label=label)
    ax.set_xlabel("x in Li$_3$YCl$_{6-x}$Br$_x$")
    ax.set_ylabel("relaxed volume per atom (Å$^3$)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
