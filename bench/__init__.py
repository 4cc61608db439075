"""Benchmarks, one module per ``relevance bench <name>``.

Each module defines ``add_arguments(parser)`` and ``run(args) -> dict``; the CLI prints the dict as the
last line of output (one JSON object). Every benchmark measures a reference in the same run and reports
a ratio, because the machines are shared and noisy.
"""
