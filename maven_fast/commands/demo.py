"""``maven-fast demo``: the main job on built-in data, end to end."""
from __future__ import annotations

HELP = "run the end-to-end demo on built-in synthetic data (build check, fused-vs-eager check, benchmark)"
DESCRIPTION = """\
Runs, in order:
  1. build info: how maven_fast._C was built and which backends run here;
  2. fused vs eager: the polar head on every available backend against the
     eager reference (values and gradients, random inputs);
  3. a micro-benchmark of the polar head (eager, torch.compile, fused).
Exit status 1 if any fused result disagrees with the reference."""


def add_arguments(parser) -> None:
    parser.add_argument("--skip-bench", action="store_true", help="skip the micro-benchmark")
    parser.add_argument("--out", default="out/demo", help="where reports are written (default: out/demo)")


def _section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))


def _check_polar_head() -> bool:
    import torch

    from maven_fast.backends import backend_problems
    from maven_fast.ops import polar_head, polar_head_reference

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    ok = True
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
            problems = backend_problems(backend, device)
            if problems:
                print(f"  {device:<4} {backend:<7} skipped: {problems[0]}")
                continue
            out = polar_head(x, w, b, target, mask, backend=backend)
            grads = torch.autograd.grad(out.loss, (x, w, b))
            err_v = (out.valence_arousal.double() - ref.valence_arousal).abs().max().item()
            err_l = abs(out.loss.item() - ref.loss.item())
            err_g = max(((a.double() - r).abs().max() / r.abs().max()).item() for a, r in zip(grads, ref_grads))
            good = err_v < 1e-5 and err_l < 1e-6 and err_g < 1e-4
            ok &= good
            print(f"  {device:<4} {backend:<7} {'OK  ' if good else 'FAIL'} max|dVA| {err_v:.1e}  |dloss| {err_l:.1e}  "
                  f"max rel grad err {err_g:.1e}")
    return ok


def run(args) -> int:
    import torch

    import maven_fast
    from maven_fast.commands import info

    _section("1. build")
    info.run(type("A", (), {"json": False})())
    _section("2. fused polar head vs eager reference (N=4097, D=256, fp32)")
    ok = _check_polar_head()
    if not args.skip_bench:
        _section("3. polar head micro-benchmark")
        import importlib.util
        from pathlib import Path

        bench_path = Path(maven_fast.__file__).resolve().parent.parent / "bench" / "polar_head.py"
        if bench_path.exists():
            spec = importlib.util.spec_from_file_location("bench_polar_head", bench_path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            module.main(["--quick", "--out", args.out, "--device", "cuda" if torch.cuda.is_available() else "cpu"])
        else:
            print("  bench/polar_head.py not found (installed from a wheel); skipped")
    _section("result")
    print("all fused results match the eager reference" if ok else "MISMATCH: see above")
    return 0 if ok else 1
