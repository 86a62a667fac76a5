#!/usr/bin/env bash
# The GPU check: one command, random weights, no network, at most 8 result files.
#
#   bench/gpu_check.sh --prepare gpu_stage     # here, with PyPI: the wheels the GPU machine lacks
#                                              # (Python 3.12) and a Czech data subset, < 48 MiB
#   bench/gpu_check.sh --stage gpu_stage       # on the GPU machine: every step below
#   bench/gpu_check.sh --dry-run               # CPU, reduced sizes: does every step run? (CI)
#
# Steps (each under its own time limit; the whole check fits 8 minutes on one H200):
#   train_step   bench/train_step.py: tiny, base, small in bf16 and fp16, ours against transformers
#   presets      bench/preset_memory.py --device cuda: each preset's real loop on worst-case clips,
#                the allocator capped to its card class, measured peak beside the estimate
#   decode       bench/decode_speed.py: ours against transformers' generate, fp16, fixed length
#   cuda_tests   tests/test_cuda.py (skipped on a CPU)
#   preset_run   train.py @configs/6gb.args on the staged Czech clips (the dry run: tests/data/cv_tiny),
#                from random base weights:
#                a user's first command, data loading, evaluation and checkpoints included
#
# Results go to $OUT when it is set, else runs/gpu_check: summary.md (every table, the machine,
# the date, the time of each step), log.txt (everything the steps printed), env.txt (GPU,
# driver, packages). Python: $PYTHON, else .venv/bin/python, else python3. Exit code 1 when a
# step failed.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=gpu
stage=""
while [ $# -gt 0 ]; do
  case $1 in
    --prepare) mode=prepare; stage=${2:?--prepare needs a folder}; shift ;;
    --stage) stage=${2:?--stage needs a folder}; shift ;;
    --dry-run) mode=dry ;;
    *) echo "usage: $0 [--prepare DIR | --stage DIR | --dry-run]" >&2; exit 2 ;;
  esac
  shift
done
if [ -n "${PYTHON:-}" ]; then py=$PYTHON
elif [ -x .venv/bin/python ]; then py=.venv/bin/python
else py=python3
fi

if [ $mode = prepare ]; then
  exec "$py" bench/gpu_stage.py "$stage"
fi

out=${OUT:-runs/gpu_check}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
summary=$out/summary.md
log=$out/log.txt
: > "$log"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -n "$stage" ]; then
  # The staged wheels, unpacked here: the GPU machine has no package index to install them from.
  "$py" -c 'import sys, zipfile, pathlib
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("wheels/*.whl")):
    zipfile.ZipFile(wheel).extractall(sys.argv[2])' "$stage" "$work/site" || exit 1
  export PYTHONPATH=$PYTHONPATH:$work/site
fi

if [ $mode = dry ]; then
  device=cpu
  sizes="tiny"
  precisions="fp32"
  step_flags="--batch 1 --tokens 8 --steps 1 --warmup 0 --threads 1 --grad-checkpointing off"
  presets="configs/6gb.args:tiny:6gb"
  preset_flags="--steps 1 --batch 1 --eval-utterances 1 --precision fp32"
  decode_flags="--dtype fp32 --batch 1 --tokens 4 --rounds 1 --threads 1"
  run_size=tiny
  run_flags="--max-steps 2 --train-batch-size 2 --eval-batch-size 2 --max-eval-utterances 2 --precision fp32
    --num-workers 0"
  data=tests/data/cv_tiny
else
  device=cuda
  sizes="tiny base small"
  precisions="bf16 fp16"
  step_flags="--batch 16 --tokens 64 --steps 5 --warmup 2 --threads 8 --grad-checkpointing off"
  presets="configs/6gb.args:base:6gb configs/6gb_lowmem.args:small:6gb configs/run.args:small:24gb"
  preset_flags="--steps 3"
  decode_flags="--dtype fp16 --batch 16 --tokens 128 --rounds 3 --threads 8"
  run_size=base
  run_flags="--max-steps 40 --eval-every 20 --max-eval-utterances 32"
  data=${stage:+$stage/cs}
fi

failed=()
started_all=$(date +%s)
{
  echo "# GPU check ($mode)"
  echo
  "$py" -c 'import datetime, platform, torch
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
cap = "capability %d.%d, " % torch.cuda.get_device_capability() if torch.cuda.is_available() else ""
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "CPU")
print(f"{datetime.date.today()}: {gpu} ({cap}torch {torch.__version__}, CUDA {torch.version.cuda}), {cpu}, Python {platform.python_version()}")'
  echo
} > "$summary"

# step NAME LIMIT_S CMD...: stdout's tables (from the first line starting with "|" or a blank
# line before one) go to the summary, everything to the log.
step() {
  local name=$1 limit=$2; shift 2
  local t0 rc
  t0=$(date +%s)
  echo "== $name: $*" | tee -a "$log" >&2
  timeout "$limit" "$@" > "$work/$name.out" 2>> "$log"
  rc=$?
  cat "$work/$name.out" >> "$log"
  {
    echo "## $name ($(( $(date +%s) - t0 )) s): \`$*\`"
    echo
    grep -v '^\s*$' "$work/$name.out" | grep -v '^== ' | tail -n 40
    echo
  } >> "$summary"
  if [ $rc != 0 ]; then
    failed+=("$name")
    echo "**failed** (exit code $rc$([ $rc = 124 ] && echo ', time limit')): $(grep -v '^\s*$' "$log" | tail -n 1)" >> "$summary"
    echo >> "$summary"
  fi
}

for size in $sizes; do
  for precision in $precisions; do
    # shellcheck disable=SC2086  # the flag lists are meant to split
    step "train_step_${size}_$precision" 150 "$py" bench/train_step.py --model "$size" --random-init \
      --device $device --precision "$precision" $step_flags
  done
done
for triple in $presets; do
  IFS=: read -r preset size card <<< "$triple"
  # shellcheck disable=SC2086
  step "presets_$(basename "$preset" .args)_$size" 150 "$py" bench/preset_memory.py --preset "$preset" \
    --size "$size" --card "$card" --device $device $preset_flags
done
for size in $sizes; do
  # shellcheck disable=SC2086
  step "decode_$size" 120 "$py" bench/decode_speed.py --size "$size" --device $device $decode_flags
done
step cuda_tests 240 "$py" -m pytest -q -rA -p no:cacheprovider tests/test_cuda.py
if [ -n "$data" ]; then
  "$py" -c 'import sys, torch
from whisper_scratch.model.checkpoint import save_model
from whisper_scratch.model.whisper import SIZES, Whisper
torch.manual_seed(0)
save_model(Whisper(SIZES[sys.argv[1]]), sys.argv[2])' "$run_size" "$work/init.pt"
  # shellcheck disable=SC2086
  step preset_run 240 "$py" train.py @configs/6gb.args --local-data-dir "$data" --language cs \
    --init "$work/init.pt" --output-dir "$work/preset_run" --device $device $run_flags
else
  echo "preset_run: no staged data (--stage DIR from --prepare DIR)" >> "$summary"
fi

{
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  command -v nvidia-smi > /dev/null && nvidia-smi
  "$py" -m pip list 2> /dev/null
} > "$out/env.txt" 2>&1
echo "Total: $(( $(date +%s) - started_all )) s. Failed steps: ${failed[*]:-none}." >> "$summary"
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu_check: failed: ${failed[*]} (see $summary and $log)" >&2
  exit 1
fi
echo "gpu_check: every step ran ($summary)" >&2
