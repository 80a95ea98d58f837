"""The one eligibility rule for fused kernels (kernels/dispatch.py)."""

import collections
import logging
from types import SimpleNamespace

import pytest
import torch

from spc_fast import notices, photometric
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


def cuda_stand_in():
    """What ``use_triton`` reads of a CUDA tensor, on a machine without one."""
    return SimpleNamespace(device=torch.device("cuda", 0), is_cuda=True)


@pytest.mark.parametrize(
    ("kernels", "disable", "expected"),
    [(None, None, "auto"), ("auto", None, "auto"), (" Triton ", None, "triton"), ("torch", None, "torch"),
     (None, "1", "torch"), ("auto", "yes", "torch"), ("triton", "0", "triton")],
)
def test_setting_reads_both_variables(monkeypatch, kernels, disable, expected):
    for name, value in ((dispatch.SETTING_ENV, kernels), (dispatch.DISABLE_ENV, disable)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert dispatch.setting() == expected


@pytest.mark.parametrize(("kernels", "disable", "match"), [("cuda", None, "not a kernel setting"),
                                                           ("triton", "1", "contradicts")])
def test_bad_settings_are_refused(monkeypatch, kernels, disable, match):
    monkeypatch.setenv(dispatch.SETTING_ENV, kernels)
    monkeypatch.delenv(dispatch.DISABLE_ENV, raising=False)
    if disable:
        monkeypatch.setenv(dispatch.DISABLE_ENV, disable)
    with pytest.raises(ValueError, match=match):
        dispatch.use_triton(torch.zeros(1))


def test_triton_setting_names_what_is_missing(monkeypatch):
    monkeypatch.setenv(dispatch.SETTING_ENV, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="nft_loss Triton kernel.*CPU.*TRITON_INTERPRET=1.*SPC_FAST_KERNELS=auto"):
        dispatch.use_triton(torch.zeros(1), op="nft_loss")
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match="triton does not import.*pip install"):
        dispatch.use_triton(cuda_stand_in())
    with pytest.raises(RuntimeError, match="SPC_FAST_KERNELS=triton"):
        photometric.attributes(torch.zeros(3, 2, 2, dtype=torch.uint8))


def test_triton_setting_runs_the_kernel_where_it_can(monkeypatch):
    monkeypatch.setenv(dispatch.SETTING_ENV, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert dispatch.use_triton(torch.zeros(1)) and dispatch.use_triton(cuda_stand_in())
    assert dispatch.backend_name(torch.zeros(1)) == "triton-interpret"


def test_auto_fallback_on_cuda_is_said_once(monkeypatch, caplog):
    monkeypatch.delenv(dispatch.SETTING_ENV, raising=False)
    monkeypatch.delenv(dispatch.DISABLE_ENV, raising=False)
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    notices.forget()
    with caplog.at_level(logging.WARNING, logger=dispatch.__name__):
        assert not dispatch.use_triton(cuda_stand_in(), op="grpo_loss")
        assert not dispatch.use_triton(cuda_stand_in(), op="grpo_loss")
        assert not dispatch.use_triton(torch.zeros(1), op="grpo_loss")  # the CPU's torch path is no fallback
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith("grpo_loss: running the torch path on CUDA tensors")
    assert "triton does not import" in caplog.records[0].getMessage()


def test_torch_setting_never_asks_for_triton(monkeypatch):
    monkeypatch.setenv(dispatch.SETTING_ENV, "torch")
    monkeypatch.setattr(dispatch, "triton_available", lambda: pytest.fail("torch setting looked for triton"))
    assert not dispatch.use_triton(cuda_stand_in())
    assert dispatch.backend_name(cuda_stand_in()) == "torch"


def test_unusable_reasons(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert dispatch.unusable_reason(cuda_stand_in()) is None and dispatch.unusable_reason(torch.zeros(1)) is None
    meta = torch.empty(1, device="meta")
    assert "different device types (cpu, meta)" in dispatch.unusable_reason(torch.zeros(1), meta)
    assert "on meta" in dispatch.unusable_reason(meta)


def test_launches_are_counted_by_how_they_ran(monkeypatch):
    monkeypatch.setattr(dispatch, "launches", collections.Counter())
    compiled = type("JITFunction", (), {"__name__": "_kernel"})()
    interpreted = type("InterpretedFunction", (), {"__name__": "_kernel"})()
    dispatch.record_launch(compiled)
    dispatch.record_launch(interpreted)
    dispatch.record_launch(interpreted)
    assert dispatch.launches == {("_kernel", "compiled"): 1, ("_kernel", "interpreted"): 2}
