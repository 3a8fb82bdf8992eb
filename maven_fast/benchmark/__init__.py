"""Benchmark harness shared by bench/ scripts and ``maven-fast bench``.

Method: every variant is checked against the reference before it is timed;
warm-up calls are excluded (compile time is reported separately by callers);
variants are timed in interleaved rounds so drift and background load hit all
of them alike; we report the median and the 20th/80th percentiles.
"""
from maven_fast.benchmark.machine import machine_description, machine_slug
from maven_fast.benchmark.report import write_report
from maven_fast.benchmark.timing import Timing, time_interleaved

__all__ = ["Timing", "time_interleaved", "machine_description", "machine_slug", "write_report"]
