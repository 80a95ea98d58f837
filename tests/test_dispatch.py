"""The one eligibility rule for fused kernels (kernels/dispatch.py)."""

import torch

from spc_fast.kernels import dispatch


def test_cpu_tensors_use_triton_only_under_the_interpreter(monkeypatch):
    x = torch.zeros(1)
    monkeypatch.delenv("SPC_FAST_DISABLE_TRITON", raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert dispatch.use_triton(x) == dispatch.triton_available()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not dispatch.use_triton(x)
    assert dispatch.backend_name(x) == "torch"


def test_disable_switch_forces_the_torch_path(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("SPC_FAST_DISABLE_TRITON", "1")
    assert not dispatch.use_triton(torch.zeros(1))
    assert dispatch.backend_name(torch.zeros(1)) == "torch"


def test_missing_triton_falls_back(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    assert not dispatch.use_triton(torch.zeros(1))


def test_mixed_devices_never_use_triton(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    meta = torch.empty(1, device="meta")
    assert not dispatch.use_triton(torch.zeros(1), meta)


def test_torch_fallback_context_restores_the_environment(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("SPC_FAST_DISABLE_TRITON", raising=False)
    x = torch.zeros(1)
    with dispatch.torch_fallback():
        assert not dispatch.use_triton(x)
    assert dispatch.use_triton(x) == dispatch.triton_available()
