#!/usr/bin/env bash
# The one prepared GPU check (fits in 8 minutes on an H100/H200): installs the wheels the device lacks and the
# project, runs the GPU-only tests (Triton compiled for real, not interpreted: the kernel tests assert that the
# compiled kernels launched, the model tests that inductor compiled and kept its CUDA graphs), then the benchmarks.
# Writes $OUT/gpu_check.log, $OUT/gpu_tests.xml, $OUT/bench.json (kernels), $OUT/bench_full_res.json and
# $OUT/bench_models.json (critic, artist), $OUT/bench_stage3.json (one stage III step).
#
# Here, once:   ../shared/device/pack-wheels.sh
# Device call:  run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 HF_HUB_OFFLINE=1

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"

status=0
echo "== GPU tests (compiled Triton) =="
timeout 100 python3 -m pytest -q -m gpu tests --junitxml="$OUT/gpu_tests.xml" -p no:cacheprovider || status=1
# two runs with their own limits, so a slow model compile cannot eat the kernels' figures (JSON is written after
# every benchmark, so a run cut short keeps what it measured)
echo "== kernel benchmarks =="
timeout 90 python3 -m spc_fast.bench --json "$OUT/bench.json" \
  --only photometric --only retouch --only nft_loss --only grpo_loss --only rewards || status=1
echo "== full-resolution transfer (the fused slice kernel's GB/s) =="
timeout 40 python3 -m spc_fast.bench --json "$OUT/bench_full_res.json" --only full_res --quick || status=1
echo "== model benchmarks =="
timeout 170 python3 -m spc_fast.bench --json "$OUT/bench_models.json" --no-copy-bw \
  --only artist_step --only critic_generate --only artist_sample || status=1
echo "== stage III step (release width, 4+4 layers: rollouts eager and compiled) =="
timeout 60 python3 -m spc_fast.bench --json "$OUT/bench_stage3.json" --no-copy-bw --only stage3_step || status=1
exit $status
