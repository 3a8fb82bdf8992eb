"""Markdown + CSV benchmark reports under bench/results/."""
from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
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


@dataclass
class Table:
    """One table of a report: a title, column names, rows and notes printed above it."""

    title: str
    header: list[str]
    rows: list[list[object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self, level: int = 3) -> str:
        parts = [f"{'#' * level} {self.title}", ""]
        parts += [f"- {n}" for n in self.notes] + ([""] if self.notes else [])
        parts.append(markdown_table(self.header, self.rows) if self.rows else "_(no rows)_")
        return "\n".join(parts)


@dataclass
class Section:
    """A titled group of tables (one per benchmark suite), with free-text notes."""

    title: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [f"## {self.title}", ""]
        parts += [f"- {n}" for n in self.notes] + ([""] if self.notes else [])
        parts += [t.markdown() + "\n" for t in self.tables]
        return "\n".join(parts).rstrip() + "\n"


def csv_rows(sections: Sequence[Section]) -> tuple[list[str], list[list[object]]]:
    """Every row of every table in one CSV schema: ``section, table`` then the union
    of all column names (in order of first appearance); cells a table lacks are empty."""
    columns: list[str] = []
    for s in sections:
        for t in s.tables:
            columns += [c for c in t.header if c not in columns]
    rows = []
    for s in sections:
        for t in s.tables:
            for row in t.rows:
                cells = dict(zip(t.header, row))
                rows.append([s.title, t.title] + [cells.get(c, "") for c in columns])
    return ["section", "table"] + columns, rows


def write_sections_report(
    out_dir: Path | str,
    stem: str,
    title: str,
    machine: dict[str, str],
    sections: Sequence[Section],
    notes: Sequence[str] = (),
    images: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Writes ``<stem>.md`` (machine, notes, images, every section) and ``<stem>.csv``
    (every table row, see :func:`csv_rows`). ``images`` are file names next to the report."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md_path, csv_path = out / f"{stem}.md", out / f"{stem}.csv"
    parts = [f"# {title}", "", "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), ""]
    parts += [f"- {n}" for n in notes] + ([""] if notes else [])
    parts += [f"![{Path(i).stem}]({i})\n" for i in images]
    parts += [s.markdown() for s in sections]
    md_path.write_text("\n".join(parts))
    header, rows = csv_rows(sections)
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return md_path, csv_path
