"""Test configuration: where there is no CUDA device, Triton kernels run on the CPU through the interpreter.

TRITON_INTERPRET must be set before triton is imported anywhere, which is why it is decided here, at collection
(importing torch does not import triton). On a CUDA machine the kernels compile: the ``gpu`` tests run them there
and assert that the compiled kernels ran (``compiled_kernels``), and the ``interpreter`` tests, which run kernels
on CPU tensors, are skipped.
"""

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


TINY_EXPORT_FORMATS = ("aoti", "onnx")
# one set of limits serves every test of an export: the pipeline's tiny critic gives H_c of about 250 tokens
TINY_EXPORT_LIMITS = ["--max-pixels", str(192 * 192), "--max-batch", "3", "--max-hc-tokens", "512"]
# A background export yields the CPU to the tests: torch's two threads on two cores, one of them busy at normal
# priority, wait on each other (2-3x slower ops), and at niceness 10 they do not.
BACKGROUND_NICENESS = 10


class TinyExports:
    """``spc-fast export`` of the tiny artist, once per session and format, into ``root/FORMAT``.

    The first format asked for is exported in this process, and every other format in ``wanted`` meanwhile in a
    child process at low priority. An export is mostly one-core work (tracing, Inductor's lowering, one g++), so on
    CI's two cores the slowest one (AOTInductor, about a minute) runs on the core the tests before its own leave idle.
    """

    def __init__(self, root: Path, wanted: set[str]) -> None:
        self.root = root
        self.wanted = wanted
        self.children: dict[str, subprocess.Popen] = {}
        self.ready: set[str] = set()

    def _flags(self, format_name: str) -> list[str]:
        return ["--artist", "tiny", "--format", format_name, "--out", str(self.root / format_name), *TINY_EXPORT_LIMITS]

    def _start(self, format_name: str) -> None:
        command = [sys.executable, "-m", "spc_fast.export.cli", *self._flags(format_name)]
        # this process's thread count: Inductor's C++ code depends on it
        env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
        with open(self.root / f"{format_name}.log", "wb") as log:  # a file: a pipe nobody reads could fill up
            child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        os.setpriority(os.PRIO_PROCESS, child.pid, BACKGROUND_NICENESS)
        self.children[format_name] = child

    def _wait(self, format_name: str) -> None:
        child = self.children.pop(format_name)
        if child.poll() is None:  # a test waits for it now: normal priority where allowed (root, as on CI)
            for thread in Path(f"/proc/{child.pid}/task").glob("*"):
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, int(thread.name), 0)
        status = child.wait(timeout=900)
        log = (self.root / f"{format_name}.log").read_text(errors="replace")
        assert status == 0, f"spc-fast export --format {format_name} exited {status}:\n{log[-3000:]}"

    def directory(self, format_name: str) -> Path:
        """The export's directory, once its export has exited 0 (parity passed)."""
        if format_name in self.children:
            self._wait(format_name)
        elif format_name not in self.ready:
            if not self.ready and not self.children:
                for other in sorted(self.wanted - {format_name}):
                    self._start(other)
            from spc_fast.export.cli import main as export_main

            assert export_main(self._flags(format_name)) == 0
        self.ready.add(format_name)
        return self.root / format_name

    def close(self) -> None:
        """Stop the exports that no test waited for (a run cut short, or deselected tests)."""
        for child in self.children.values():
            child.kill()
            child.wait()
        self.children.clear()


@pytest.fixture(scope="session")
def tiny_exports(request, tmp_path_factory) -> Iterator[TinyExports]:
    """The session's exports; a format is wanted when a collected test uses its fixture."""
    wanted = {
        format_name
        for format_name in TINY_EXPORT_FORMATS
        if any(f"tiny_{format_name}_export" in item.fixturenames for item in request.session.items)
    }
    exports = TinyExports(tmp_path_factory.mktemp("tiny_exports"), wanted)
    yield exports
    exports.close()


@pytest.fixture(scope="session")
def tiny_aoti_export(tiny_exports: TinyExports) -> Path:
    """The tiny artist's AOTInductor export (``TINY_EXPORT_LIMITS``), shared by the session: do not write into it."""
    return tiny_exports.directory("aoti")


@pytest.fixture(scope="session")
def tiny_onnx_export(tiny_exports: TinyExports) -> Path:
    """The tiny artist's ONNX export (``TINY_EXPORT_LIMITS``), shared by the session: do not write into it."""
    return tiny_exports.directory("onnx")


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
