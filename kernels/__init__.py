"""Fused Triton kernels, one op per module, each with its launcher and its torch fallback.

Imported as ``spc_fast.kernels`` (the folder ``kernels/`` is mapped onto that name by pyproject.toml).
"""
