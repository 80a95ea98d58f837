"""What the kernels' grid sizing reads from the device: its number of streaming multiprocessors (SMs).

A grid of a few programs per SM keeps every SM busy and the last partial wave short; how many SMs there are
depends on the GPU (132 on an H100/H200 SXM, 114 on an H100 PCIe, 108 on an A100), so it is read from the device,
once per device.
"""

from __future__ import annotations

import functools

import torch


@functools.cache
def _multiprocessor_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def multiprocessor_count(device: torch.device | str) -> int:
    """Streaming multiprocessors of the CUDA ``device`` (cached per device index)."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"multiprocessor_count needs a CUDA device, got {device}; the grid of the CPU is not sized")
    return _multiprocessor_count(torch.cuda.current_device() if device.index is None else device.index)


def min_programs(device: torch.device | str, per_multiprocessor: int) -> int:
    """Programs a grid needs for ``per_multiprocessor`` of them on every SM of ``device``."""
    return per_multiprocessor * multiprocessor_count(device)
