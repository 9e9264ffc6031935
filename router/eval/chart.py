"""The run's picture: quality (with its 95% bootstrap interval) against tokens per answer."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from router.eval.report import Report


def draw(report: Report, path: Path) -> Path | None:
    """Write a PNG; None (and nothing written) when no configuration has a quality yet.

    matplotlib is imported here, not at module level, so the harness runs without it (the ``eval``
    extra installs it); the CLI says so when it is missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [s for s in report.configurations if s.quality is not None and s.tokens]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 5.2), dpi=120)
    # Points that land on (nearly) the same spot share one label instead of printing over each other.
    clusters: list[tuple[float, float, list[str]]] = []
    for s in points:
        assert s.quality is not None and s.tokens is not None
        q = s.quality
        is_base = s.name == report.baseline
        ax.errorbar(
            [s.tokens],
            [q.mean * 100],
            yerr=[[(q.mean - q.low) * 100], [(q.high - q.mean) * 100]],
            fmt="s" if s.solo else "o",
            markersize=8 if is_base else 6,
            capsize=4,
            color="tab:blue" if s.solo else "tab:orange",
            ecolor="grey",
            alpha=0.85,
        )
        label = f"{s.name} ({s.calls:.1f} calls)" if s.calls is not None else s.name
        for x, y, labels in clusters:
            if abs(math.log10(s.tokens / x)) < 0.04 and abs(q.mean * 100 - y) < 3:
                labels.append(label)
                break
        else:
            clusters.append((s.tokens, q.mean * 100, [label]))
    notes = [
        ax.annotate("\n".join(labels), (x, y), textcoords="offset points", xytext=(7, 4), fontsize=8)
        for x, y, labels in sorted(clusters, key=lambda c: -c[1])
    ]
    ax.set_xscale("log")
    ax.set_xlabel("tokens per answer (prompt + completion, all calls; log scale)")
    ax.set_ylabel("quality, % (95% bootstrap CI)")
    ax.set_ylim(-2, 102)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"{report.title}: {report.items} items" + ("" if report.complete else " (incomplete)"), fontsize=10)
    from matplotlib.lines import Line2D

    ax.legend(
        handles=[
            Line2D([], [], marker="s", color="tab:blue", linestyle="", label="solo model"),
            Line2D([], [], marker="o", color="tab:orange", linestyle="", label="looper / Fusion"),
        ],
        loc="best",
        fontsize=8,
    )
    # Leave room on the right for labels of the costliest point.
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * 2.5)
    fig.tight_layout()
    _separate(fig, notes)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _separate(fig: Any, notes: list[Any]) -> None:
    """Move labels down (highest point first) until no two overlap on the canvas."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed: list[Any] = []
    for note in notes:
        for _ in range(40):
            box = note.get_window_extent(renderer)
            clash = next((b for b in placed if box.overlaps(b)), None)
            if clash is None:
                break
            dx, dy = note.xyann
            # points per pixel: 72 / dpi; move just below the label it ran into
            note.xyann = (dx, dy - (box.y1 - clash.y0 + 2) * 72 / fig.dpi)
        placed.append(note.get_window_extent(renderer))
