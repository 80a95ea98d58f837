"""Test configuration: where there is no CUDA device, Triton kernels run on the CPU through the interpreter.

TRITON_INTERPRET must be set before triton is imported anywhere, which is why it is decided here, at collection
(importing torch does not import triton). On a CUDA machine the kernels compile: the ``gpu`` tests run them there
and assert that the compiled kernels ran (``compiled_kernels``), and the ``interpreter`` tests, which run kernels
on CPU tensors, are skipped.
"""

import contextlib
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from spc_fast.kernels import dispatch  # noqa: E402

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "interpreter: runs Triton kernels on CPU tensors through Triton's interpreter (skipped where the kernels "
        "compile, on a CUDA machine; gpu tests in the same module still run)",
    )


@pytest.fixture
def one_thread():
    """One torch thread: two threads on two busy cores wait on each other for milliseconds per op, and the training
    tests' tiny models gain nothing from a second one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def torch_path(monkeypatch):
    """Run ops on their torch path: for tests of the command line and the pipeline, not of the kernels,
    where the Triton interpreter would only make them slow."""
    monkeypatch.setenv(dispatch.SETTING_ENV, "torch")


@pytest.fixture
def compiled_kernels():
    """For GPU tests: ``with compiled_kernels("_kernel_name", ...):`` asserts that the block launched each named
    Triton kernel compiled, not interpreted, and launched nothing interpreted."""

    @contextlib.contextmanager
    def expect(*names: str):
        assert not dispatch.interpreting(), "TRITON_INTERPRET=1 on a CUDA machine: the kernels would be interpreted"
        before = dispatch.launches.copy()
        yield
        ran = dispatch.launches - before
        missing = [name for name in names if ran[name, "compiled"] == 0]
        interpreted = [name for name, how in ran if how == "interpreted"]
        assert not missing and not interpreted, f"launches {dict(ran)}: expected compiled {names}"

    return expect


@pytest.fixture(scope="session")
def photos():
    """The colour photographs bundled inside scikit-image, as H x W x 3 uint8 arrays."""
    import skimage.data

    return {name: getattr(skimage.data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket")}


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device; run bench/gpu_check.sh on a GPU machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
    elif not dispatch.interpreting():
        skip = pytest.mark.skip(reason="runs kernels on CPU tensors in Triton's interpreter; CPU-only CI runs it")
        for item in items:
            if "interpreter" in item.keywords and "gpu" not in item.keywords:
                item.add_marker(skip)
