"""The prediction plot: valence/arousal over time, and the trajectory on the
valence-arousal circumplex (the unit circle of Russell's model)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_predictions(
    path: str | Path,
    times_s: np.ndarray,
    valence: np.ndarray,
    arousal: np.ndarray,
    title: str = "",
    segments: list[tuple[float, float, str]] | None = None,
) -> Path:
    """Writes a PNG with two panels; ``segments`` (start, end, text) shade utterances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [2.2, 1]})
    for i, (start, end, _text) in enumerate(segments or []):
        ax_t.axvspan(start, end, color="0.92" if i % 2 else "0.97", lw=0)
    ax_t.plot(times_s, valence, label="valence", color="tab:blue", lw=1.4)
    ax_t.plot(times_s, arousal, label="arousal", color="tab:red", lw=1.4)
    ax_t.axhline(0, color="0.6", lw=0.6)
    ax_t.set_ylim(-1.05, 1.05)
    ax_t.set_xlabel("time (s)")
    ax_t.set_ylabel("value")
    ax_t.legend(loc="upper right")
    ax_t.set_title("valence and arousal over time")

    circle = np.linspace(0, 2 * np.pi, 200)
    ax_c.plot(np.cos(circle), np.sin(circle), color="0.7", lw=0.8)
    ax_c.axhline(0, color="0.8", lw=0.6)
    ax_c.axvline(0, color="0.8", lw=0.6)
    points = ax_c.scatter(valence, arousal, c=times_s, cmap="viridis", s=6)
    ax_c.plot(valence, arousal, color="0.5", lw=0.4, alpha=0.6)
    fig.colorbar(points, ax=ax_c, label="time (s)")
    ax_c.set_xlim(-1.1, 1.1)
    ax_c.set_ylim(-1.1, 1.1)
    ax_c.set_aspect("equal")
    ax_c.set_xlabel("valence")
    ax_c.set_ylabel("arousal")
    ax_c.set_title("circumplex trajectory")
    if title:  # a file name's undecodable bytes (\udcff) as the escape the CSVs hold: matplotlib refuses them
        fig.suptitle(title.encode("utf-8", errors="backslashreplace").decode("utf-8"))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
