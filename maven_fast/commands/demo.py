"""``maven-fast demo``: the main job on built-in synthetic data, end to end."""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

HELP = "run the end-to-end demo on built-in synthetic data (synth, extract, train, eval, predict)"
DESCRIPTION = """\
The whole pipeline on a small synthetic Aff-Wild2-shaped dataset, with tiny
random-init encoders (no download), in a few minutes on a 2-core CPU:

  1. build: how maven_fast._C was built, which backends run here, and a check
     of the fused polar head against the eager reference;
  2. synth: real MP4 files (video + AAC audio), transcripts and per-frame
     valence/arousal labels carried by the signals (kept if already there);
  3. extract: frozen tiny encoders over every segment -> feature cache (resumable);
  4. train: the `paper` preset with the fused backend (--backend) from the cache;
  5. eval: per-frame CCC_v, CCC_a and P of the best checkpoint on the validation split;
  6. predict: one validation video + its transcript -> CSV per segment and per
     frame, and a PNG plot (valence/arousal over time, circumplex trajectory);
  7. speed: training samples/s of the fused backend vs eager on the same batches.

Everything is written under --out (default out/demo)."""


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    parser.add_argument("--backend", default="auto", choices=["auto", "eager", "cpu", "cuda", "triton"],
                        help="backend of the trained model (default: auto = fused for this device)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default: 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-speed", action="store_true", help="skip the fused-vs-eager speed step")


def _section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def _check_polar_head() -> bool:
    import torch

    from maven_fast.backends import backend_problems
    from maven_fast.ops import polar_head, polar_head_reference

    ok = True
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        g = torch.Generator().manual_seed(0)
        n, d = 4097, 256
        x = torch.randn(n, d, generator=g).to(device).requires_grad_()
        w = (torch.randn(2, d, generator=g) / 16).to(device).requires_grad_()
        b = torch.randn(2, generator=g).to(device).requires_grad_()
        target = (torch.rand(n, 2, generator=g) * 2 - 1).to(device)
        mask = (torch.rand(n, generator=g) > 0.2).to(device)
        ref = polar_head_reference(x.double(), w.double(), b.double(), target, mask)
        ref_grads = torch.autograd.grad(ref.loss, (x, w, b))
        for backend in ("cpu", "cuda", "triton"):
            if backend_problems(backend, device):
                continue
            out = polar_head(x, w, b, target, mask, backend=backend)
            grads = torch.autograd.grad(out.loss, (x, w, b))
            err_v = (out.valence_arousal.double() - ref.valence_arousal).abs().max().item()
            err_g = max(((a.double() - r).abs().max() / r.abs().max()).item() for a, r in zip(grads, ref_grads))
            good = err_v < 1e-5 and err_g < 1e-4
            ok &= good
            print(f"  polar head {device}/{backend}: {'OK' if good else 'MISMATCH'} "
                  f"(max |dVA| {err_v:.1e}, max rel grad err {err_g:.1e})")
    return ok


def run(args) -> int:
    import torch

    import maven_fast
    from maven_fast.data import collate_segments, extract_features, make_synthetic_dataset
    from maven_fast.encoders import load_encoders
    from maven_fast.train.api import evaluate_checkpoint, open_split, train
    from maven_fast.train.config import TrainConfig

    out = Path(args.out)
    began = time.perf_counter()

    _section("1. build")
    info = maven_fast.build_info()
    print(f"  torch {info['torch_version']}, extension built for torch {info.get('built_torch_version')}, "
          f"CUDA kernels: {info.get('cuda_kernels')} {info.get('cuda_archs')}, CPU kernels: "
          f"{info.get('cpu_capability')}, Triton {info['triton_version']}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for name, problems in maven_fast.available_backends(device).items():
        print(f"  backend {name:<7} {'available' if not problems else 'unavailable: ' + problems[0]}")
    polar_ok = _check_polar_head()

    _section("2. synth")
    data = out / "data"
    if (data / "synth_info.json").exists():
        print(f"  using the dataset already in {data}")
    else:
        people = make_synthetic_dataset(data, seed=args.seed)
        print(f"  wrote {len(people)} annotated people to {data}")

    _section("3. extract (tiny encoders)")
    encoders = load_encoders("tiny")
    result = extract_features(data, out / "cache", encoders, progress=sys.stderr.isatty())
    print(f"  cache: {out / 'cache'} ({len(result.written)} written, {len(result.skipped)} already done, "
          f"{len(result.failed)} failed)")

    _section(f"4. train the paper preset (backend {args.backend})")
    sig = encoders.signature()
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [
        "model=paper", f"data.cache={out / 'cache'}", f"run.out_dir={run_dir}", f"run.epochs={args.epochs}",
        f"run.backend={args.backend}", "run.batch_size=4", f"run.seed={args.seed}", "run.tensorboard=false",
        f"run.progress={str(sys.stderr.isatty()).lower()}",
    ] + [f"model.encoders.{m}={sig[m]['name']}" for m in sig] + [f"model.encoders.{m}_dim={sig[m]['dim']}" for m in sig]
    cfg = TrainConfig.load(None, overrides)
    t0 = time.perf_counter()
    trained = train(cfg)
    print(f"  trained {trained['progress']['step']} steps in {time.perf_counter() - t0:.0f} s; "
          f"best validation P {trained['progress']['best_P']:.3f} at step {trained['progress']['best_step']}")

    _section("5. eval (best checkpoint, validation split)")
    metrics = evaluate_checkpoint(run_dir / "checkpoints" / "best", out / "cache", cfg.data.val_split,
                                  backend=args.backend)
    print(f"  CCC_v {metrics['ccc_v']:.3f}  CCC_a {metrics['ccc_a']:.3f}  P {metrics['P']:.3f}  "
          f"({metrics['frames']} frames)")

    _section("6. predict (one validation video with its transcript)")
    predicted = _predict_one(data, run_dir / "checkpoints" / "best", out / "predict", args.backend)

    speed = None
    if not args.skip_speed:
        _section("7. training speed: fused vs eager (same batches, same weights)")
        from maven_fast.train.speed import training_samples_per_second

        speed = {}
        for preset in ("paper", "reference_mlp"):
            pcfg = TrainConfig.load(None, [o for o in overrides if not o.startswith("model=")] + [f"model={preset}"])
            dataset = open_split(pcfg.data.cache, pcfg.data.train_split, pcfg.model)
            eager = training_samples_per_second(pcfg, dataset, collate_segments, "eager")
            fused = training_samples_per_second(pcfg, dataset, collate_segments, args.backend)
            speed[preset] = fused / eager
            print(f"  {preset:<13} eager {eager:6.1f} samples/s, {args.backend} {fused:6.1f} samples/s: "
                  f"{speed[preset]:.2f}x")

    _section("result")
    print(f"  validation CCC_v {metrics['ccc_v']:.3f}, CCC_a {metrics['ccc_a']:.3f}, P {metrics['P']:.3f}")
    if speed is not None:
        print("  training speed, " + args.backend + " vs eager: "
              + ", ".join(f"{k} {v:.2f}x" for k, v in speed.items()))
    if predicted:
        print(f"  predictions and plot: {predicted}")
    print(f"  polar head check: {'OK' if polar_ok else 'MISMATCH'}; total {time.perf_counter() - began:.0f} s")
    return 0 if polar_ok else 1


def _predict_one(data: Path, checkpoint: Path, out: Path, backend: str):
    """Runs `maven-fast predict` on the first validation video; returns the output folder."""
    try:
        from maven_fast.commands import predict as predict_cmd
    except ImportError:
        print("  maven-fast predict is not available in this build; skipped")
        return None
    import argparse
    import json

    info = json.loads((data / "synth_info.json").read_text())
    person = next(p for p in info["people"] if p["split"] == "val")
    video = next(data.glob(f"videos/*/{person['video']}.mp4"))
    transcript = next(data.glob(f"transcripts/{person['video']}.*"))
    parser = argparse.ArgumentParser()
    predict_cmd.add_arguments(parser)
    args = parser.parse_args([str(video), "--transcript", str(transcript),
                              "--checkpoint", str(checkpoint), "--out", str(out), "--plot", "--backend", backend]
                             + ([] if sys.stderr.isatty() else ["--no-progress"]))
    predict_cmd.run(args)
    return out
