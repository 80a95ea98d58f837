"""Ahead-of-time compilation of Triton kernels for sm_90 (H100) on a machine without a GPU.

It catches what the interpreter cannot: loop-carried types, constexpr branches that only fail when lowered, and
register spills. Kernels must be imported with TRITON_INTERPRET unset, so tests call ``compile_in_subprocess``,
which runs this file as a script: ``python sm90_compile.py '<json list of specs>'`` prints one JSON result per
spec. A spec is {"module", "kernel", "signature", "constexprs", "num_warps"}.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile


def compile_in_subprocess(specs: list[dict], timeout: float = 300) -> list[dict]:
    """[{"registers": int, "spill_bytes": int}] per spec (ptxas -v of the sm_90a build)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, __file__, json.dumps(specs)], capture_output=True, text=True, timeout=timeout, env=env
    )
    if out.returncode:
        raise RuntimeError(f"sm_90 compilation failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ptxas_usage(ptx: str) -> dict:
    from triton.backends.nvidia.compiler import get_ptxas

    tool = get_ptxas(90)
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        cmd = [getattr(tool, "path", tool), "-v", "--gpu-name=sm_90a", str(src), "-o", str(src.with_suffix(".cubin"))]
        log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    registers = int(re.search(r"Used (\d+) registers", log).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", log))
    return {"registers": registers, "spill_bytes": spills}


def main(specs: list[dict]) -> list[dict]:
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    results = []
    for spec in specs:
        kernel = getattr(importlib.import_module(spec["module"]), spec["kernel"])
        source = ASTSource(fn=kernel, signature=spec["signature"], constexprs=spec["constexprs"])
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": spec["num_warps"]})
        results.append(_ptxas_usage(compiled.asm["ptx"]))
    return results


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
