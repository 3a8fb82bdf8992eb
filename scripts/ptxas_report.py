"""Registers, shared memory, stack and spills per CUDA kernel and arch, from a
verbose build log (the CMake build passes -Xptxas=-v to nvcc), as a Markdown table.

    touch csrc/*/*.cu && .venv/bin/cmake --build build/<wheel_tag> -v > build.log 2>&1
    python scripts/ptxas_report.py build.log [--filter cross_modal]
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys


def parse(lines):
    rows, cur = [], None
    for line in lines:
        m = re.search(r"Compiling entry function '(\S+)' for '(sm_\d+)'", line)
        if m:
            cur = {"symbol": m.group(1), "arch": m.group(2)}
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and cur is not None:
            cur.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
            continue
        m = re.search(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, (\d+) bytes smem)?", line)
        if m and cur is not None and "stack" in cur:
            cur.update(registers=int(m.group(1)), smem=int(m.group(2) or 0))
            rows.append(cur)
            cur = None
    return rows


def demangle(symbols):
    if not shutil.which("c++filt"):
        return symbols
    out = subprocess.run(["c++filt"], input="\n".join(symbols), capture_output=True, text=True).stdout
    return out.splitlines()


def short(name):
    name = re.sub(r"maven_fast::cuda::\(anonymous namespace\)::", "", name)
    name = re.sub(r"^void ", "", re.sub(r"\(.*\)$", "", name))
    return name.replace("__nv_bfloat16", "bf16").replace("__half", "fp16")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("--filter", default="", help="keep kernels whose name contains this")
    args = ap.parse_args(argv)
    with open(args.log, errors="replace") as f:
        rows = parse(f)
    for r, n in zip(rows, demangle([r["symbol"] for r in rows])):
        r["name"] = short(n)
    rows = sorted((r for r in rows if args.filter in r["name"]), key=lambda r: (r["name"], r["arch"]))
    print("| kernel | arch | registers | static smem (B) | stack (B) | spill stores / loads (B) |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| `{r['name']}` | {r['arch']} | {r['registers']} | {r['smem']} | {r['stack']} | "
              f"{r['spill_stores']} / {r['spill_loads']} |")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
