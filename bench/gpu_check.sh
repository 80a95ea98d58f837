#!/usr/bin/env bash
# The one prepared GPU check (fits in 8 minutes on an H100/H200): installs the wheels the device lacks and the
# project, runs the GPU-only tests (Triton compiled for real, not interpreted: the kernel tests assert that the
# compiled kernels launched, the model tests that inductor compiled and kept its CUDA graphs), then the benchmarks.
# Writes $OUT/gpu_check.log, $OUT/gpu_tests.xml, $OUT/bench.json (kernels), $OUT/bench_full_res.json and
# $OUT/bench_models.json (critic, artist), $OUT/bench_stage3.json (one stage III step), $OUT/bench_inference.json
# (one 1 MP DiT step, release width with 2 layers, bf16, batch 1 and 4: eager, torch.compile, AOTI; ONNX Runtime
# and TensorRT rows say why they did not run unless onnxruntime-gpu / torch-tensorrt are installed; no FP8 row:
# both FP8 paths, TensorRT + ModelOpt and torchao, are installs the device lacks).
# Each part's limit is cut to what is left of GPU_CHECK_BUDGET_S, counted from the script's start with the install
# (default 450 s); parts that find under 20 s left are skipped and named in the log. All parts take more than one
# 15-minute lease holds in one call, so the check is two calls, the second at once while the machine is warm:
#   bash bench/gpu_check.sh                     tests kernels full_res stage3 (the default, ~7.5 minutes)
#   bash bench/gpu_check.sh models inference    the model and deployment benchmarks (~6 minutes)
#
# Here, once:   ../shared/device/pack-wheels.sh imagecodecs==2026.3.6 pypng==0.20220715.0
# Device call:  run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=500)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1 TRITON_INTERPRET=0 HF_HUB_OFFLINE=1

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"

status=0
budget=${GPU_CHECK_BUDGET_S:-450}
parts=" ${*:-tests kernels full_res stage3} "
# part NAME CAP_S TITLE COMMAND...: run COMMAND under the smaller of CAP_S and what is left of the budget
part() {
  local name=$1 cap=$2 title=$3
  shift 3
  [[ $parts == *" $name "* ]] || return 0
  local left=$((budget - SECONDS))
  if ((left < 20)); then
    echo "== $title: SKIPPED, ${left} s of the ${budget} s budget left =="
    status=1
    return 0
  fi
  echo "== $title (limit $((cap < left ? cap : left)) s) =="
  # SIGINT first: pytest prints its failures and the benchmarks keep the JSON they wrote; KILL 15 s later
  timeout -s INT -k 15 $((cap < left ? cap : left)) "$@" || status=1
}
part tests 170 "GPU tests (compiled Triton)" \
  python3 -m pytest -q -m gpu tests --junitxml="$OUT/gpu_tests.xml" -p no:cacheprovider
# separate runs with their own limits, so a slow model compile cannot eat the kernels' figures (JSON is written
# after every benchmark, so a run cut short keeps what it measured)
part kernels 90 "kernel benchmarks" python3 -m spc_fast.bench --json "$OUT/bench.json" \
  --only photometric --only retouch --only nft_loss --only grpo_loss --only rewards
part full_res 40 "full-resolution transfer (the fused slice kernel's GB/s)" \
  python3 -m spc_fast.bench --json "$OUT/bench_full_res.json" --only full_res --quick
part models 170 "model benchmarks" python3 -m spc_fast.bench --json "$OUT/bench_models.json" --no-copy-bw \
  --only artist_step --only critic_generate --only artist_sample
part stage3 150 "stage III step (release width, 4+4 layers: rollouts eager and compiled)" \
  python3 -m spc_fast.bench --json "$OUT/bench_stage3.json" --no-copy-bw --only stage3_step
# the AOTI compile of the 2-layer step and torch.compile's two shapes dominate (~2.5 minutes expected): after the
# other parts it gets what is left, so for its figures run it as its own call (bash bench/gpu_check.sh inference)
part inference 200 "inference: DiT step eager / compile / AOTI / ORT / TensorRT (1 MP, B=1 and 4, bf16)" \
  python3 -m spc_fast.bench --json "$OUT/bench_inference.json" --no-copy-bw --only inference
exit $status
