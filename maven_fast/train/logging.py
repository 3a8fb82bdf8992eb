"""Run logs: a CSV file, TensorBoard scalars and a one-line summary per epoch."""
from __future__ import annotations

import csv
import math
from pathlib import Path

COLUMNS = ["kind", "epoch", "step", "loss", "ccc_v", "ccc_a", "P", "lr", "samples_per_s", "frames_per_s", "seconds"]


class RunLogger:
    """Writes ``metrics.csv`` (and TensorBoard events under ``tb/``) on rank 0 only.

    On resume, rows past the resumed step (logged after the checkpoint, then
    lost with the process) are dropped so the CSV has each step once.
    """

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.csv"
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, COLUMNS)
            w.writeheader()
            w.writerows(rows)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # pragma: no cover - tensorboard is pinned
                raise RuntimeError(
                    "run.tensorboard=true needs the tensorboard package (pip install tensorboard) "
                    "or set run.tensorboard=false"
                ) from exc
            self._tb = SummaryWriter(str(Path(out_dir) / "tb"), purge_step=resume_step)

    def log(self, kind: str, epoch: int, step: int, **values: float) -> None:
        if not self.enabled:
            return
        row = {"kind": kind, "epoch": epoch, "step": step}
        row.update({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in values.items() if k in COLUMNS})
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow(row)
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
