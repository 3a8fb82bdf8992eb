r"""Evaluation metrics and losses for valence/arousal regression.

Concordance correlation coefficient (Lin 1989), with population moments over
the N valid frames pooled (never averaged per video or per batch):

.. math::
    \mathrm{CCC}(x, y) = \frac{2\,\sigma_{xy}}{\sigma_x^2 + \sigma_y^2 + (\mu_x - \mu_y)^2},\qquad
    P = \frac{\mathrm{CCC}_{valence} + \mathrm{CCC}_{arousal}}{2}

computed in float64. Degenerate cases are defined, never NaN: a series counts as
constant when its variance is at most ``1e-12 * (1 + mean^2)`` (float64
rounding of the one-pass sums); two constant series have CCC = 1 when their
means are equal (identical series agree perfectly) and 0 otherwise; a constant
series against a varying one has CCC = 0 (their covariance is 0). With no valid
frame at all CCC is undefined and :class:`ValueError` is raised.

:class:`CCCAccumulator` keeps only sums (n, Σx, Σy, Σx², Σy², Σxy per output, in
float64), so it streams over any number of batches and merges across processes
by adding them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

OUTPUT_NAMES = ("valence", "arousal")
_CONSTANT_TOL = 1e-12


def ccc_from_moments(mean_x: float, mean_y: float, var_x: float, var_y: float, cov: float) -> float:
    """CCC from population moments, with the degenerate cases of the module docstring."""
    const_x = var_x <= _CONSTANT_TOL * (1.0 + mean_x * mean_x)
    const_y = var_y <= _CONSTANT_TOL * (1.0 + mean_y * mean_y)
    if const_x and const_y:
        return 1.0 if mean_x == mean_y else 0.0
    if const_x or const_y:
        return 0.0
    return 2.0 * cov / (var_x + var_y + (mean_x - mean_y) ** 2)


def _valid_rows(pred: Tensor, target: Tensor, mask: Tensor | None, outputs: int | None) -> tuple[Tensor, Tensor]:
    """Flatten to ``[N, K]`` and keep the rows where ``mask`` is True."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if outputs is None:
        pred, target = pred.reshape(-1, 1), target.reshape(-1, 1)
        lead = pred.shape[:1]
    else:
        if pred.shape[-1] != outputs:
            raise ValueError(f"pred: expected shape [..., {outputs}], got {tuple(pred.shape)}")
        lead = pred.shape[:-1]
        pred, target = pred.reshape(-1, outputs), target.reshape(-1, outputs)
    if mask is not None:
        if mask.numel() != pred.shape[0] or mask.dtype != torch.bool:
            raise ValueError(
                f"mask: expected a bool tensor with one entry per frame ({tuple(lead)}), "
                f"got {tuple(mask.shape)} {mask.dtype}"
            )
        keep = mask.reshape(-1).to(pred.device)
        pred, target = pred[keep], target[keep]
    return pred, target


def ccc(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """CCC of two series of any (equal) shape over the positions where ``mask`` is True."""
    x, y = _valid_rows(pred.detach(), target.detach(), mask, None)
    x, y = x.double().reshape(-1), y.double().reshape(-1)
    if x.numel() == 0:
        raise ValueError("ccc: no valid frames (the mask selects nothing); CCC is undefined")
    mx, my = x.mean(), y.mean()
    dx, dy = x - mx, y - my
    return ccc_from_moments(mx.item(), my.item(), (dx * dx).mean().item(), (dy * dy).mean().item(),
                            (dx * dy).mean().item())


@dataclass
class VAMetrics:
    """CCC of valence and of arousal, P = their mean, MSE over both, and the frame count."""

    ccc_valence: float
    ccc_arousal: float
    p: float
    mse: float
    count: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def va_metrics(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> VAMetrics:
    """:class:`VAMetrics` of ``pred, target [..., 2]`` (valence, arousal) over valid frames."""
    acc = CCCAccumulator()
    acc.update(pred, target, mask)
    return acc.compute()


def masked_mse(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, return_count: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Mean of the squared errors over valid frames and all outputs:
    :math:`\sum_n m_n \lVert p_n - y_n \rVert^2 / (K \sum_n m_n)`; 0 when no frame is valid.

    ``pred, target [..., K]``, ``mask [...]`` bool. Differentiable; float32
    (float64 for float64 inputs).
    """
    acc = torch.float64 if pred.dtype == torch.float64 else torch.float32
    k = pred.shape[-1]
    x, y = _valid_rows(pred, target, mask, k)
    err = x.to(acc) - y.to(acc)
    n_valid = torch.tensor(float(x.shape[0]), dtype=acc, device=pred.device)
    loss = (err * err).sum() / (k * n_valid).clamp_min(1)
    return (loss, n_valid) if return_count else loss


def ccc_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    r"""Differentiable :math:`1 - \frac1K\sum_k \mathrm{CCC}_k` over the valid frames of the batch.

    ``pred, target [..., K]`` (K = 2: valence, arousal). ``eps`` keeps the
    denominator positive when both series are constant. 0 (still attached to
    the graph) when no frame is valid.
    """
    acc = torch.float64 if pred.dtype == torch.float64 else torch.float32
    k = pred.shape[-1]
    x, y = _valid_rows(pred, target, mask, k)
    if x.shape[0] == 0:
        return pred.sum() * 0.0
    x, y = x.to(acc), y.to(acc)
    mx, my = x.mean(0), y.mean(0)
    dx, dy = x - mx, y - my
    var_x, var_y, cov = (dx * dx).mean(0), (dy * dy).mean(0), (dx * dy).mean(0)
    concordance = 2 * cov / (var_x + var_y + (mx - my) ** 2 + eps)
    return 1 - concordance.mean()


class CCCAccumulator:
    """Streaming CCC/MSE over many batches and processes, from float64 sums only.

    >>> acc = CCCAccumulator()
    >>> acc.update(pred, target, mask)   # pred, target [..., 2]; mask [...] bool   # doctest: +SKIP
    >>> acc.all_reduce_()                # sum over ranks when torch.distributed is up  # doctest: +SKIP
    >>> acc.compute().p                                                           # doctest: +SKIP
    """

    ROWS = ("n", "sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy")

    def __init__(self, names: tuple[str, ...] = OUTPUT_NAMES) -> None:
        self.names = tuple(names)
        self.sums = torch.zeros(len(self.ROWS), len(self.names), dtype=torch.float64)

    def reset(self) -> None:
        self.sums.zero_()

    @property
    def count(self) -> int:
        return int(self.sums[0, 0].item())

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        x, y = _valid_rows(pred.detach(), target.detach(), mask, len(self.names))
        x, y = x.double(), y.double()
        batch = torch.stack([
            torch.full((x.shape[1],), float(x.shape[0]), dtype=torch.float64, device=x.device),
            x.sum(0), y.sum(0), (x * x).sum(0), (y * y).sum(0), (x * y).sum(0),
        ])
        self.sums += batch.to(self.sums.device)

    def merge(self, other: "CCCAccumulator") -> "CCCAccumulator":
        """Add another accumulator's sums (e.g. gathered from another process)."""
        if other.names != self.names:
            raise ValueError(f"cannot merge accumulators of outputs {other.names} into {self.names}")
        self.sums += other.sums.to(self.sums.device)
        return self

    def all_reduce_(self, group=None) -> "CCCAccumulator":
        """Sum the sums over all ranks of ``group`` (no-op without an initialised process group)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        device = self.sums.device
        if dist.get_backend(group) == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        sums = self.sums.to(device)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
        self.sums = sums.to(self.sums.device)
        return self

    def ccc_per_output(self) -> list[float]:
        n = self.sums[0]
        if float(n[0]) == 0:
            raise ValueError("CCCAccumulator: no valid frames were accumulated; CCC is undefined")
        mean_x, mean_y = self.sums[1] / n, self.sums[2] / n
        var_x = self.sums[3] / n - mean_x * mean_x
        var_y = self.sums[4] / n - mean_y * mean_y
        cov = self.sums[5] / n - mean_x * mean_y
        return [ccc_from_moments(*(float(t[k]) for t in (mean_x, mean_y, var_x, var_y, cov)))
                for k in range(len(self.names))]

    def mse(self) -> float:
        """Mean over outputs of Σ(x - y)² / n, from the sums."""
        n = self.sums[0]
        squared_error = self.sums[3] - 2 * self.sums[5] + self.sums[4]
        return float((squared_error / n).mean())

    def compute(self) -> VAMetrics:
        if self.names != OUTPUT_NAMES:
            raise ValueError("compute() reports valence/arousal; use ccc_per_output() for other outputs")
        ccc_v, ccc_a = self.ccc_per_output()
        return VAMetrics(ccc_v, ccc_a, (ccc_v + ccc_a) / 2, self.mse(), self.count)
