"""The command-line frame shared by the single-suite scripts in bench/: the common
options (``--device``, ``--quick``, ``--out``) and one Markdown + CSV report of
the suite's table."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from maven_fast.benchmark.machine import machine_description, machine_slug
from maven_fast.benchmark.report import write_report
from maven_fast.benchmark.results import SuiteResult, VariantMismatch


def parser(doc: str, out: Path) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="fewer sizes, cases and rounds")
    ap.add_argument("--out", default=str(out), help=f"report directory (default: {out})")
    return ap


def run_and_report(name: str, args: argparse.Namespace, run: Callable[[], SuiteResult],
                   title: str, notes: list[str] = (), stem_extra: str = "") -> int:
    """Runs one suite and writes ``<out>/<name>-<machine>[-extra]-<date>[-quick].md|csv``;
    exit status 1 when a variant disagrees with the reference (nothing is written)."""
    try:
        result = run()
    except VariantMismatch as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    (table,) = result.section.tables
    machine = machine_description()
    stem = f"{name}-{machine_slug(args.device)}{stem_extra}-{machine['date']}" + ("-quick" if args.quick else "")
    md, csv_path = write_report(args.out, stem, f"{title} ({table.title})", machine, table.header, table.rows,
                                notes=list(notes) + table.notes)
    print(md.read_text())
    print(f"written: {md} and {csv_path}", file=sys.stderr)
    return 0
