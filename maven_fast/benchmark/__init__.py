"""Benchmark harness shared by bench/ scripts and ``maven-fast bench``.

``maven-fast bench`` runs the suites registered in :mod:`maven_fast.benchmark.suites`
and writes one report (docs/bench.md).

Method: every variant is checked against the reference before it is timed;
warm-up calls are excluded (compile time is reported separately by callers);
variants are timed in interleaved rounds so drift and background load hit all
of them alike; we report the median and the 20th/80th percentiles.
"""
from maven_fast.benchmark.machine import machine_description, machine_slug
from maven_fast.benchmark.report import Section, Table, write_report, write_sections_report
from maven_fast.benchmark.results import Measurement, SuiteResult, VariantMismatch
from maven_fast.benchmark.timing import Timing, time_interleaved

__all__ = ["Timing", "time_interleaved", "machine_description", "machine_slug", "write_report",
           "write_sections_report", "Section", "Table", "Measurement", "SuiteResult", "VariantMismatch"]
