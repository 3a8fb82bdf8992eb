"""Validation / evaluation: per-frame CCC pooled over every valid frame of a
split (float64 sums, merged across ranks), P = (CCC_v + CCC_a) / 2."""
from __future__ import annotations

from contextlib import nullcontext

import torch

from maven_fast.metrics import CCCAccumulator
from maven_fast.train.batches import batch_frames, to_model_inputs


@torch.no_grad()
def evaluate(model, loader, device: torch.device, autocast_dtype: torch.dtype | None = None,
             collect: list | None = None) -> dict[str, float]:
    """Returns ``{"loss", "ccc_v", "ccc_a", "P", "frames"}`` over the loader (all ranks).

    ``collect``: if a list, per-segment predictions are appended to it as
    ``(video name, frame numbers [Tv], valence_arousal [Tv, 2])`` (CPU), e.g. for
    an ABAW submission file.
    """
    was_training = model.training
    model.eval()
    acc = CCCAccumulator()
    loss_sum = torch.zeros((), dtype=torch.float64)
    frames = torch.zeros((), dtype=torch.float64)
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    try:
        for batch in loader:
            inputs, targets, mask = to_model_inputs(batch, device)
            with ctx:
                out = model(**inputs, targets=targets, mask=mask)
            va = out.valence_arousal.float()
            acc.update(va, targets, mask)
            n = out.n_valid.double().cpu()
            loss_sum += out.mse.double().cpu() * n
            frames += n
            if collect is not None:
                for i, (name, frame_numbers) in enumerate(batch_frames(batch)):
                    collect.append((name, frame_numbers, va[i, : len(frame_numbers)].cpu()))
    finally:
        model.train(was_training)
    acc.all_reduce_()
    stats = torch.stack([loss_sum, frames])
    from maven_fast.train.distributed import all_reduce_sum

    all_reduce_sum(stats)
    metrics = acc.compute()
    return {
        "loss": float(stats[0] / stats[1]) if stats[1] > 0 else float("nan"),
        "ccc_v": float(metrics.ccc_valence),
        "ccc_a": float(metrics.ccc_arousal),
        "P": float(metrics.p),
        "frames": int(stats[1]),
    }

