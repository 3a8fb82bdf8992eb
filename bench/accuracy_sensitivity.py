"""How far a rounding-sized change moves one seed's final validation P.

The accuracy suite judges fused vs eager fp32 training seed by seed; on some
seeds the two end a few hundredths apart. This script asks whether that is the
implementation or the trajectory: per seed it trains eager and the fused
backend as the suite does (same data, config, seed and batches), then each of
them again with every initial weight moved by about one ulp (w * (1 +- 2^-23), signs
from ``torch.Generator().manual_seed(g)`` for g in ``--perturbations``; the
global RNG, hence batch order, is untouched). A seed whose P moves by as much
under a one-ulp change as between the backends is one where 60 epochs amplify
rounding, not one where the backends compute different things.

    python bench/accuracy_sensitivity.py --seeds 8 9 [--preset paper] [--perturbations 1 2 3] [--epochs 60]

Prints one line per run (P and P - P(eager, unperturbed)) and writes
<out>/accuracy-sensitivity-<machine>-<date>-<preset>.md.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import sys
import tempfile
from pathlib import Path

import torch

from maven_fast.benchmark.accuracy import BATCH_SIZE, LR, PRESETS, _train, build_cache, train_config
from maven_fast.benchmark.machine import machine_slug


@contextlib.contextmanager
def one_ulp_initial_weights(generator_seed: int | None):
    """Within the block, every model the trainer builds starts from its usual weights times
    (1 +- 2^-23) (None: unchanged)."""
    from maven_fast.train import trainer

    original = trainer.Trainer._make_model

    def make_model(self):
        model = original(self)
        g = torch.Generator().manual_seed(generator_seed)
        with torch.no_grad():
            for p in model.parameters():
                sign = torch.randint(0, 2, p.shape, generator=g).mul_(2).sub_(1).to(p.dtype)
                p.mul_(1 + 2.0 ** -23 * sign)
        return model

    if generator_seed is not None:
        trainer.Trainer._make_model = make_model
    try:
        yield
    finally:
        trainer.Trainer._make_model = original


def run(preset: str, seeds: list[int], perturbations: list[int], epochs: int, backends: list[str],
        device: str = "cpu", videos_per_split: int = 3, frames: int = 96) -> list[tuple[int, str, int | None, float]]:
    """(seed, backend, perturbation or None, final val P) of every run."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="maven-sensitivity-") as tmp:
        work = Path(tmp)
        cache, signature = build_cache(work, videos_per_split, frames)
        for seed in seeds:
            for backend in backends:
                for g in [None, *perturbations]:
                    cfg = train_config(preset, backend, cache, signature, work / f"{backend}-{seed}-{g}", device,
                                       epochs, LR, BATCH_SIZE, seed)
                    with one_ulp_initial_weights(g):
                        p = _train(cfg)[0]["P"]
                    rows.append((seed, backend, g, p))
                    base = next(r[3] for r in rows if r[0] == seed and r[1] == backends[0] and r[2] is None)
                    print(f"seed {seed} {backend:6s} {'one ulp, g=' + str(g) if g is not None else 'as trained':16s}"
                          f" P {p:.4f}  P - P(eager) {p - base:+.4f}", file=sys.stderr, flush=True)
    return rows


def render(preset: str, epochs: int, rows) -> str:
    lines = [f"# Sensitivity of final validation P to a one-ulp change of the initial weights: {preset}", "",
             f"{datetime.date.today()}, torch {torch.__version__}; the accuracy suite's data and config, fp32, "
             f"{epochs} epochs; `python bench/accuracy_sensitivity.py`. P - P(eager): against eager as trained, "
             "same seed.", "", "| seed | backend | initial weights | val P | P - P(eager) |", "|---|---|---|---|---|"]
    for seed, backend, g, p in rows:
        base = next(r[3] for r in rows if r[0] == seed and r[2] is None)
        lines.append(f"| {seed} | {backend} | {'as trained' if g is None else f'one ulp (g={g})'} | {p:.4f} | "
                     f"{p - base:+.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper", choices=list(PRESETS))
    ap.add_argument("--seeds", type=int, nargs="+", required=True, help="training seeds to examine")
    ap.add_argument("--perturbations", type=int, nargs="*", default=[1, 2, 3],
                    help="generator seeds of the one-ulp sign patterns (default: 1 2 3)")
    ap.add_argument("--epochs", type=int, default=60, help="epochs per training (the suite's: 60)")
    ap.add_argument("--backends", nargs="+", default=["eager", "cpu"], help="eager first (default: eager cpu)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"), help="report folder")
    args = ap.parse_args(argv)
    if args.backends[0] != "eager":
        ap.error(f"--backends must start with eager (the reference), got {args.backends}")
    if args.epochs < 1:
        ap.error(f"--epochs must be >= 1, got {args.epochs}")
    rows = run(args.preset, args.seeds, args.perturbations, args.epochs, args.backends)
    out = Path(args.out) / f"accuracy-sensitivity-{machine_slug('cpu')}-{datetime.date.today()}-{args.preset}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(args.preset, args.epochs, rows))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
