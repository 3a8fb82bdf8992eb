"""The training loop behind ``maven-fast train``.

Exactness (SPEC 4, issue 8): the data order depends only on (seed, epoch)
(DistributedSampler, also for one process, and a DataLoader with its own
generator), dropout draws from the global RNG whose state is checkpointed, and
a resumed run skips the batches its epoch already did; so a run stopped after
step k and resumed ends with the same weights as one that never stopped
(bit-identical on the CPU with ``run.deterministic=true``).

DDP: the loss of each rank is normalised by the number of valid frames of the
GLOBAL batch, so DDP's gradient average equals the single-process gradient of
the same global batch (exactly, for the MSE loss; a CCC loss term is a
per-rank statistic and is averaged over ranks).
"""
from __future__ import annotations

import math
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from maven_fast.model import MAVEN
from maven_fast.train import distributed as dist_utils
from maven_fast.train.batches import to_model_inputs
from maven_fast.train.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from maven_fast.train.config import TrainConfig
from maven_fast.train.evaluate import evaluate
from maven_fast.train.logging import RunLogger


class _SkipSampler(Sampler):
    """The first ``skip`` indices of ``base`` left out (resuming mid-epoch)."""

    def __init__(self, base: Sampler, skip: int) -> None:
        self.base, self.skip = base, skip

    def __iter__(self):
        for i, idx in enumerate(self.base):
            if i >= self.skip:
                yield idx

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


class _StridedSampler(Sampler):
    """Evaluation share of one rank: indices rank, rank + world, ... (no padding,
    so no frame is counted twice when the metrics are merged)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """``run.autocast``: ``auto`` is bf16 on a GPU and on a CPU with native bf16 matmuls
    (AVX512-BF16 or AMX), fp32 on other CPUs, where emulated bf16 is slower than fp32
    (README, "bf16 on the CPU")."""
    from maven_fast.backends import cpu_native_bf16

    mode = cfg.run.autocast
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_native_bf16()) else "none"
    elif mode == "bf16" and device.type == "cpu" and not cpu_native_bf16():
        warnings.warn(
            "run.autocast=bf16 on a CPU without AVX512-BF16 or AMX: torch emulates bf16 matmuls here, far slower "
            "than fp32 (a 2-core AVX2 EPYC: 0.7 against 146 GFLOP/s; the paper training step 50 s against 1 s); "
            "run.autocast=auto or none trains in fp32 on this CPU", RuntimeWarning, stacklevel=2)
    return torch.bfloat16 if mode == "bf16" else None


#: devices where torch has a fused (single-kernel) Adam/AdamW step
FUSED_ADAM_DEVICES = ("cpu", "cuda")


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    """Adam or AdamW with the config's settings. Where torch has a fused step for the
    parameters' device (CPU, CUDA) it is used: one pass over parameters, gradients and
    both moments instead of one per operation (paper preset, 26.6 M parameters, 2-core
    CPU: 11 ms per step against 30 ms for torch's default for-loop implementation)."""
    o = cfg.optim
    params = list(params)
    cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
    fused = bool(params) and all(p.device.type in FUSED_ADAM_DEVICES and p.is_floating_point() for p in params)
    return cls(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay, fused=fused or None)


def build_scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    o = cfg.optim
    if o.scheduler == "plateau":
        mode = "min" if o.plateau_metric == "loss" else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=o.plateau_factor, patience=o.plateau_patience
        )
    if o.scheduler == "cosine":
        warm = max(0, o.warmup_steps)
        total = max(total_steps, warm + 1)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None


class Trainer:
    """``Trainer(cfg, train_set, val_set, collate).fit(resume=None)``."""

    def __init__(self, cfg: TrainConfig, train_set, val_set, collate) -> None:
        self.cfg = cfg
        self.train_set, self.val_set, self.collate = train_set, val_set, collate
        self.dist = dist_utils.setup(cfg.run.device, cfg.run.dist_timeout_s)
        self.out_dir = Path(cfg.run.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"

    # ------------------------------------------------------------------ set-up
    def _make_model(self) -> MAVEN:
        torch.manual_seed(self.cfg.run.seed)  # same initial weights on every rank
        model = MAVEN(self.cfg.model, backend=self.cfg.run.backend).to(self.dist.device)
        return model

    def _train_loader(self, epoch: int, skip_batches: int) -> DataLoader:
        sampler = DistributedSampler(
            self.train_set, num_replicas=self.dist.world_size, rank=self.dist.rank,
            shuffle=True, seed=self.cfg.run.seed, drop_last=False,
        )
        sampler.set_epoch(epoch)
        bs = self.cfg.run.batch_size
        return DataLoader(
            self.train_set, batch_size=bs, sampler=_SkipSampler(sampler, skip_batches * bs),
            collate_fn=self.collate, num_workers=self.cfg.data.num_workers,
            generator=torch.Generator().manual_seed(self.cfg.run.seed + epoch),
        )

    def val_loader(self) -> DataLoader:
        return DataLoader(
            self.val_set, batch_size=self.cfg.run.batch_size,
            sampler=_StridedSampler(len(self.val_set), self.dist.rank, self.dist.world_size),
            collate_fn=self.collate, num_workers=self.cfg.data.num_workers,
            generator=torch.Generator().manual_seed(0),
        )

    # ------------------------------------------------------------------ loop
    def fit(self, resume: str | Path | None = None) -> dict[str, Any]:
        cfg, d = self.cfg, self.dist
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        model = self._make_model()
        optimizer = build_optimizer(cfg, model.parameters())
        steps_per_epoch = math.ceil(len(self.train_set) / (cfg.run.batch_size * d.world_size))
        total_steps = cfg.run.max_steps or cfg.run.epochs * steps_per_epoch
        scheduler = build_scheduler(cfg, optimizer, total_steps)
        progress: dict[str, Any] = {"epoch": 0, "step": 0, "epoch_step": 0, "best_P": None, "best_step": None}
        if resume is not None:
            progress = load_checkpoint(resolve_checkpoint(resume), model, optimizer, scheduler)
            if d.rank > 0:  # the checkpoint holds rank 0's RNG; other ranks need their own stream
                torch.manual_seed(cfg.run.seed + 1000 * d.rank + 1 + progress["step"])
        else:
            # Dropout masks differ per rank; ranks must not share a stream.
            torch.manual_seed(cfg.run.seed + 1000 * d.rank + 1)
        train_model = model
        if d.distributed:
            train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[d.local_rank] if d.device.type == "cuda" else None
            )
        if cfg.run.compile:
            train_model = torch.compile(train_model)
        amp = _autocast_dtype(cfg, d.device)
        logger = RunLogger(self.out_dir, d.is_main, cfg.run.tensorboard, resume_step=progress["step"] if resume else None)
        if d.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            cfg.to_yaml(self.out_dir / "config.yaml")
        last_val: dict[str, float] = {}
        stop = False
        try:
            while progress["epoch"] < cfg.run.epochs and not stop:
                epoch = progress["epoch"]
                stop, train_stats = self._train_epoch(train_model, optimizer, scheduler, progress, amp, logger, steps_per_epoch)
                mid_epoch_stop = stop and progress["epoch_step"] < steps_per_epoch
                if not mid_epoch_stop:
                    progress["epoch"], progress["epoch_step"] = epoch + 1, 0
                if (mid_epoch_stop or (epoch + 1) % cfg.run.eval_every == 0
                        or progress["epoch"] == cfg.run.epochs or stop):
                    last_val = self._validate(model, optimizer, scheduler, progress, amp, logger, epoch,
                                              step_scheduler=not mid_epoch_stop)
                    if d.is_main:
                        print(f"epoch {epoch + 1}/{cfg.run.epochs} step {progress['step']}: "
                              f"train loss {train_stats['loss']:.4f} ({train_stats['samples_per_s']:.1f} samples/s) | "
                              f"val loss {last_val['loss']:.4f} CCC_v {last_val['ccc_v']:.3f} "
                              f"CCC_a {last_val['ccc_a']:.3f} P {last_val['P']:.3f} | lr {optimizer.param_groups[0]['lr']:.2e}",
                              flush=True)
                self._save("last", model, optimizer, scheduler, progress)
        finally:
            logger.close()
        return {"progress": progress, "val": last_val, "model": model}

    def _validate(self, model, optimizer, scheduler, progress, amp, logger, epoch, step_scheduler: bool):
        """Evaluate, log, step ReduceLROnPlateau (at epoch ends) and keep `best` by P."""
        cfg = self.cfg
        val = evaluate(model, self.val_loader(), self.dist.device, amp)
        logger.log("val", epoch, progress["step"], lr=optimizer.param_groups[0]["lr"],
                   **{k: v for k, v in val.items() if k != "frames"})
        if step_scheduler and isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val["loss"] if cfg.optim.plateau_metric == "loss" else val["P"])
        if progress["best_P"] is None or val["P"] > progress["best_P"]:
            progress["best_P"], progress["best_step"] = val["P"], progress["step"]
            self._save("best", model, optimizer, scheduler, progress)
        return val

    def _train_epoch(self, train_model, optimizer, scheduler, progress, amp, logger, steps_per_epoch):
        cfg, d = self.cfg, self.dist
        loader = self._train_loader(progress["epoch"], progress["epoch_step"])
        train_model.train()
        ctx = torch.autocast(d.device.type, dtype=amp) if amp else nullcontext()
        bar = None
        if d.is_main and cfg.run.progress:
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, initial=progress["epoch_step"], leave=False,
                       desc=f"epoch {progress['epoch'] + 1}/{cfg.run.epochs}", dynamic_ncols=True)
        loss_sum, frames_sum, samples, t0 = 0.0, 0.0, 0, time.perf_counter()
        window_t0, window_samples, window_frames = t0, 0, 0
        stop = False
        for batch in loader:
            inputs, targets, mask = to_model_inputs(batch, d.device)
            with ctx:
                out = train_model(**inputs, targets=targets, mask=mask)
            n_local = out.n_valid.detach().to(torch.float64)
            n_global = dist_utils.all_reduce_sum(n_local.clone())
            # mean over the global batch's valid frames (see the module docstring)
            scale = (n_local * d.world_size / n_global.clamp_min(1)).to(out.loss.dtype)
            loss = out.loss * scale if d.distributed else out.loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(train_model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                scheduler.step()
            progress["step"] += 1
            progress["epoch_step"] += 1
            b = inputs["video"].shape[0]
            f = int(n_local.item())
            loss_sum += float(out.mse.detach()) * f
            frames_sum += f
            samples += b
            window_samples += b
            window_frames += int(inputs["video_lengths"].sum()) if inputs.get("video_lengths") is not None else b * inputs["video"].shape[1]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(out.loss.detach()):.4f}")
            if progress["step"] % cfg.run.log_every == 0:
                now = time.perf_counter()
                logger.log("train", progress["epoch"], progress["step"], loss=float(out.loss.detach()),
                           lr=optimizer.param_groups[0]["lr"],
                           samples_per_s=window_samples * d.world_size / (now - window_t0),
                           frames_per_s=window_frames * d.world_size / (now - window_t0))
                window_t0, window_samples, window_frames = now, 0, 0
            if cfg.run.checkpoint_every and progress["step"] % cfg.run.checkpoint_every == 0:
                self._save("last", self._unwrap(train_model), optimizer, scheduler, progress)
            if cfg.run.max_steps and progress["step"] >= cfg.run.max_steps:
                stop = True
                break
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - t0
        return stop, {
            "loss": loss_sum / max(frames_sum, 1.0),
            "samples_per_s": samples * d.world_size / max(elapsed, 1e-9),
        }

    @staticmethod
    def _unwrap(m):
        m = getattr(m, "_orig_mod", m)
        return getattr(m, "module", m)

    def _save(self, name, model, optimizer, scheduler, progress) -> None:
        if self.dist.is_main:
            save_checkpoint(self.ckpt_dir / name, model, optimizer, scheduler, dict(progress),
                            config=self.cfg.to_dict())
        dist_utils.barrier()
