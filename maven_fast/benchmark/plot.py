"""The report's figure: speed-up vs eager of every variant across the benchmarked
sizes, one panel per (suite, pass); matplotlib with the Agg backend (no display)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from maven_fast.benchmark.results import Measurement


def plot_speedups(measurements: Sequence[Measurement], path: Path | str, title: str = "") -> Path | None:
    """Writes a PNG (None when there is nothing to plot). x: the suite's cases in the
    order run; y: eager median / variant median (log scale when the values span more
    than 8x), the dashed line is eager."""
    panels: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        panels.setdefault((m.suite, m.pass_name), []).append(m)
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.2), squeeze=False)
    for ax, ((suite, pass_name), ms) in zip(axes[0], panels.items()):
        cases = list(dict.fromkeys(m.case for m in ms))
        others = [m for m in ms if m.kind != "eager"]
        for variant in dict.fromkeys(m.variant for m in others):
            points = [(cases.index(m.case), m.speedup) for m in others if m.variant == variant]
            ax.plot(*zip(*points), marker="o", label=variant)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="eager")
        if not others:
            ax.text(0.5, 0.6, "only eager ran\n(see the report for why)", transform=ax.transAxes, ha="center")
        ax.set_xticks(range(len(cases)), cases, rotation=20, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(cases) - 0.5)
        values = [m.speedup for m in others] + [1.0]
        ax.set_ylim(min(values) / 1.25, max(values) * 1.25)
        if max(values) / min(values) > 8:
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}x"))
        ax.set_title(f"{suite}: {pass_name}", fontsize=10)
        ax.set_ylabel("speed-up vs eager (median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
