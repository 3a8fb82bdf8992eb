"""Training throughput of one backend on cached batches (the demo's fused-vs-eager figure)."""
from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader

from maven_fast.model import MAVEN
from maven_fast.train.batches import to_model_inputs
from maven_fast.train.config import TrainConfig
from maven_fast.train.trainer import build_optimizer


def training_samples_per_second(cfg: TrainConfig, dataset, collate, backend: str, steps: int = 10,
                                warmup: int = 2) -> float:
    """Samples/s of `steps` optimiser steps (forward, loss, backward, clip, Adam) after
    `warmup` steps, on the same batches and initial weights for every backend."""
    torch.manual_seed(cfg.run.seed)
    model = MAVEN(cfg.model, backend=backend)
    optimizer = build_optimizer(cfg, model.parameters())
    loader = DataLoader(dataset, batch_size=cfg.run.batch_size, shuffle=False, collate_fn=collate)
    batches = []
    for batch in loader:
        batches.append(to_model_inputs(batch, torch.device("cpu")))
        if len(batches) == steps + warmup:
            break
    samples, elapsed = 0, 0.0
    for i, (inputs, targets, mask) in enumerate(batches):
        t0 = time.perf_counter()
        out = model(**inputs, targets=targets, mask=mask)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        if i >= warmup:
            elapsed += time.perf_counter() - t0
            samples += inputs["video"].shape[0]
    return samples / max(elapsed, 1e-9)
