"""Benchmark: predict's peak memory against video length, alone.

The pipeline suite's ``memory`` pass (maven_fast/benchmark/pipeline_suite.py)
without its base-size encoder passes, which take hours on a small CPU: a
generated video (30 fps, audio, a transcript) per length, predicted whole with
the tiny encoders in fp32, each in its own process so its peak RSS is its own.
Decoding runs ahead into a bounded queue, so memory must not grow with the
video's length (issue target: 20 minutes within 10% of 5 minutes).

    python bench/pipeline_memory.py [--minutes 5 20] [--device cpu] [--out bench/results]

Writes <out>/pipeline-memory-<machine>-<date>.md.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

from maven_fast.benchmark.machine import machine_slug
from maven_fast.benchmark.pipeline_suite import measure_memory, memory_table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[5.0, 20.0], help="video lengths (default 5 20)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"), help="report folder")
    args = ap.parse_args(argv)
    if any(m <= 0 for m in args.minutes):
        ap.error(f"--minutes must be positive, got {args.minutes}")
    with tempfile.TemporaryDirectory(prefix="maven-fast-pipeline-memory-") as tmp:
        memory = measure_memory(Path(tmp), lambda msg: print(msg, file=sys.stderr),
                                tuple(60.0 * m for m in args.minutes), device=args.device)
    table = memory_table(memory)
    lines = [f"# {table.title}", "", f"{datetime.date.today()}, {machine_slug(args.device)}; "
             f"python bench/pipeline_memory.py --minutes {' '.join(f'{m:g}' for m in args.minutes)}", "",
             "| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table.rows]
    (short, first), (long, last) = sorted(memory.items())[0], sorted(memory.items())[-1]
    if long > short:
        lines += ["", f"Peak RSS {long / 60:g} min / {short / 60:g} min: "
                      f"{last['peak_rss_mib'] / first['peak_rss_mib']:.3f} (target <= 1.10)."]
    out = Path(args.out) / f"pipeline-memory-{machine_slug(args.device)}-{datetime.date.today()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
