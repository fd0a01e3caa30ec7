"""Benchmarks: named suites (`run_suite`) that emit JSON rows, and a markdown report of them."""

from recfunnel.bench.report import load_rows, render_markdown
from recfunnel.bench.suites import SUITES, run_suite, write_json

__all__ = ["SUITES", "load_rows", "render_markdown", "run_suite", "write_json"]
