"""Benchmarks of spc-fast, run as ``spc-fast bench`` or ``python -m spc_fast.bench``."""
