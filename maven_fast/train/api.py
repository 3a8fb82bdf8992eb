"""Python entry points behind ``maven-fast train`` and ``maven-fast eval``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from maven_fast.config import ConfigError, MavenConfig
from maven_fast.train.config import TrainConfig


def open_split(cache: str | Path, split: str, model_cfg: MavenConfig, max_frames: int = 0,
               mask_missing_images: bool = True, allow_compute_dtype_mismatch: bool = False):
    """The cached split as a Dataset, after checking it was built with the config's encoders."""
    from maven_fast.data import FeatureCacheDataset

    if not cache:
        raise ConfigError("data.cache: no feature cache given; run `maven-fast extract DATA CACHE` and "
                          "pass data.cache=CACHE")
    ds = FeatureCacheDataset(cache, split, pooled=model_cfg.pooled_inputs, max_frames=max_frames or None,
                             mask_missing_images=mask_missing_images)
    check_cache_matches(ds.signature, model_cfg, cache)
    check_cache_precision(ds.index.get("settings"), model_cfg, cache, allow_compute_dtype_mismatch)
    return ds


def check_cache_precision(settings: dict | None, model_cfg: MavenConfig, cache: str | Path,
                          allow_mismatch: bool = False) -> None:
    """``model.encoders.compute_dtype``: ``cache`` takes the cache's (so the checkpoint records it);
    a precision that differs from the cache's is an error naming both, unless ``allow_mismatch``
    (``maven-fast eval --allow-compute-dtype-mismatch``: e.g. to measure what a precision change
    does to a trained model), then a warning."""
    from maven_fast.encoders.precision import recorded_compute_dtype

    have = recorded_compute_dtype((settings or {}).get("compute_dtype"))
    want = model_cfg.encoders.compute_dtype
    if want == "cache":
        model_cfg.encoders.compute_dtype = have
    elif want != have and allow_mismatch:
        import warnings

        warnings.warn(f"the feature cache {cache} was made at {have}, the model's features at {want} "
                      "(mismatch allowed)", UserWarning, stacklevel=3)
    elif want != have:
        raise ConfigError(
            f"model.encoders.compute_dtype: the config says {want!r} but the feature cache {cache} was made "
            f"with the encoders computing in {have!r}; set model.encoders.compute_dtype={have} (or 'cache'), "
            f"or re-extract the cache with --compute-dtype {want} (maven-fast eval: --allow-compute-dtype-mismatch "
            "accepts it)"
        )


def check_cache_matches(signature: dict, model_cfg: MavenConfig, cache: str | Path) -> None:
    """A cache built with other encoders than ``model.encoders`` says is an error naming the key."""
    expected = model_cfg.encoders.signature()
    for modality, want in expected.items():
        have = signature.get(modality, {})
        for field, key in (("name", f"model.encoders.{modality}"), ("dim", f"model.encoders.{modality}_dim")):
            if have.get(field) != want[field]:
                raise ConfigError(
                    f"{key}: the config says {want[field]!r} but the feature cache {cache} was built with "
                    f"{have.get(field)!r} ({modality} encoder {have}); set {key}={have.get(field)} or re-extract "
                    "the cache with the configured encoders"
                )


def train(cfg: TrainConfig, resume: str | Path | None = None) -> dict[str, Any]:
    """Train as configured; ``resume="auto"`` continues ``run.out_dir`` from its last checkpoint."""
    from maven_fast.data import collate_segments
    from maven_fast.train.trainer import Trainer

    train_set = open_split(cfg.data.cache, cfg.data.train_split, cfg.model, cfg.data.max_frames,
                           cfg.data.mask_missing_images)
    val_set = open_split(cfg.data.cache, cfg.data.val_split, cfg.model, cfg.data.max_frames,
                         cfg.data.mask_missing_images)
    if resume == "auto":
        resume = cfg.run.out_dir
    trainer = Trainer(cfg, train_set, val_set, collate_segments)
    try:
        return trainer.fit(resume=resume)
    finally:
        from maven_fast.train import distributed

        distributed.teardown()


def load_trained_model(checkpoint: str | Path, backend: str = "auto", device: str | torch.device = "cpu"):
    """A MAVEN model from a training checkpoint (its config is in the manifest)."""
    from maven_fast.model import MAVEN
    from maven_fast.train.checkpoint import load_model_weights, verify_checkpoint

    from maven_fast.train.checkpoint import CheckpointError

    manifest = verify_checkpoint(checkpoint)
    where = Path(manifest["directory"]) / "manifest.json"
    try:
        cfg = TrainConfig.from_dict(manifest.get("config") or {})
    except (ConfigError, RecursionError) as exc:
        raise CheckpointError(f"{where}: its config is not valid: {exc}") from None
    cfg.model.beit.init_from = None  # the saved weights replace any pretrained initialisation
    _check_weight_shapes(cfg.model, Path(manifest["directory"]) / "model.safetensors")
    model = MAVEN(cfg.model, backend="eager")
    load_model_weights(model, manifest["directory"])
    model.to(device).eval()
    model.set_backend(backend)
    return model, cfg, manifest


def _check_weight_shapes(model_cfg: MavenConfig, weights: Path) -> None:
    """The weights file holds every parameter of the configured model with its shape: checked
    on a model built on the meta device (no memory), before the real one is built, so that a
    manifest whose config was edited cannot make ``MAVEN()`` allocate without bound."""
    from safetensors import safe_open

    from maven_fast.model import MAVEN
    from maven_fast.train.checkpoint import CheckpointError

    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in MAVEN(model_cfg, backend="eager").state_dict().items()}
        with safe_open(str(weights), framework="pt") as f:
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - an unbuildable config or an unreadable file
        raise CheckpointError(f"{weights}: cannot check the weights against the manifest's config "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    wrong = sorted(k for k in expected if have.get(k) != expected[k])
    if wrong:
        raise CheckpointError(f"{weights}: weights do not fit the manifest's model config: "
                              f"{len(wrong)} parameter(s) missing or of another shape (e.g. {wrong[0]}: "
                              f"{list(have[wrong[0]]) if wrong[0] in have else 'missing'}, expected "
                              f"{list(expected[wrong[0]])})")


def evaluate_checkpoint(checkpoint: str | Path, cache: str | Path, split: str = "val",
                        backend: str = "auto", batch_size: int = 8, submission: str | Path | None = None,
                        frame_list: str | Path | None = None,
                        allow_compute_dtype_mismatch: bool = False) -> dict[str, float]:
    """Per-frame CCC_v, CCC_a and P of a checkpoint on a cached split; optionally an ABAW submission.
    A cache made at another encoder precision than the checkpoint's training cache is refused
    unless ``allow_compute_dtype_mismatch``."""
    from torch.utils.data import DataLoader

    from maven_fast.data import collate_segments
    from maven_fast.train.evaluate import evaluate

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, cfg, _ = load_trained_model(checkpoint, backend, device)
    ds = open_split(cache, split, cfg.model, cfg.data.max_frames, cfg.data.mask_missing_images,
                    allow_compute_dtype_mismatch)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate_segments)
    collect: list | None = [] if submission else None
    metrics = evaluate(model, loader, device, collect=collect)
    if submission:
        from maven_fast.data import write_submission

        frames: dict[str, list] = {}
        values: dict[str, list] = {}
        for name, frame_numbers, va in collect:
            frames.setdefault(name, []).append(frame_numbers)
            values.setdefault(name, []).append(va)
        predictions = {n: (torch.cat(frames[n]).numpy(), torch.cat(values[n]).numpy()) for n in frames}
        report = write_submission(submission, predictions, frame_list=frame_list)
        metrics["submission"] = str(submission)
        metrics["submission_notes"] = [str(issue) for issue in report.issues]
    return metrics
