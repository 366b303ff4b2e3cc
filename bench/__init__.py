"""Benchmarks of our IRC gateway beside Biboumi: ``python -m bench`` (see docs/performance.md)."""
