"""Test configuration: Triton kernels run on the CPU through the interpreter.

TRITON_INTERPRET must be set before triton is imported anywhere, which is why it is set here, at collection.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def torch_path(monkeypatch):
    """Run ops on their torch path: for tests of the command line and the pipeline, not of the kernels,
    where the Triton interpreter would only make them slow."""
    monkeypatch.setenv("SPC_FAST_DISABLE_TRITON", "1")


@pytest.fixture(scope="session")
def photos():
    """The colour photographs bundled inside scikit-image, as H x W x 3 uint8 arrays."""
    import skimage.data

    return {name: getattr(skimage.data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket")}


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; run bench/gpu_check.sh on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
