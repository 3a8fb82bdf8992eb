"""Markdown + CSV benchmark reports under bench/results/."""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(
    out_dir: Path | str,
    stem: str,
    title: str,
    machine: dict[str, str],
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    notes: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Writes ``<stem>.md`` (machine, method notes, table) and ``<stem>.csv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out / f"{stem}.md", out / f"{stem}.csv"
    parts = [f"# {title}", "", "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), ""]
    parts += [f"- {n}" for n in notes] + ([""] if notes else [])
    parts.append(markdown_table(header, rows))
    md_path.write_text("\n".join(parts) + "\n")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return md_path, csv_path
