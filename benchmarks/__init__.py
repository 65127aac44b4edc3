"""The benchmark suite: tutorial-style baselines against the pipeline's own training (issue 5).

Run it with `python -m benchmarks [--quick] [--json PATH]` (or `make bench`, `make bench-quick`).
"""
