#!/usr/bin/env bash
# The GPU check, in one go, writing its figures into docs/benchmarks.md (the section between the
# "gpu_check" markers, replaced each time; appended when the markers are missing):
#   1. training step time and peak memory against transformers: tiny, base, small (bench/train_step.py)
#   2. the run_6gb_lowmem.sh settings with a small-sized model: peak allocated memory must stay
#      under 6 GB (bench/preset_memory.py; the check fails when it does not)
#   3. fine-tuning base on the Czech data (bench/finetune_cs.py)
#   4. transcription speed and WER against faster-whisper (bench/transcribe_cpu.py --device cuda)
#
#   bench/gpu_check.sh                        # on a machine with a GPU
#   bench/gpu_check.sh --cpu-smoke            # CPU, tiny sizes, 1 step, 2 clips: does every part run?
#   bench/gpu_check.sh --only memory,transcribe --data /path/to/shared/data --work runs/gpu_check
#
# --data is the folder holding fillets-cv/cs and asterisk-en (default ../shared/data); steps 1
# and 2 need no data or weights (random weights, the repo's tests/data/cv_tiny). Python: $PYTHON,
# else .venv/bin/python, else python3. --cpu-smoke writes its section into a copy of the doc in
# --work, not into docs/benchmarks.md. Exit code 1 when any part failed or memory was over.
set -uo pipefail
cd "$(dirname "$0")/.."

smoke=0
only="train_step,memory,finetune,transcribe"
data=../shared/data
work=runs/gpu_check
docs=""
while [ $# -gt 0 ]; do
  case $1 in
    --cpu-smoke) smoke=1 ;;
    --only) only=$2; shift ;;
    --data) data=$2; shift ;;
    --work) work=$2; shift ;;
    --docs) docs=$2; shift ;;
    *) echo "usage: $0 [--cpu-smoke] [--only train_step,memory,finetune,transcribe] [--data DIR]" \
            "[--work DIR] [--docs FILE]" >&2
       exit 2 ;;
  esac
  shift
done
if [ -n "${PYTHON:-}" ]; then py=$PYTHON
elif [ -x .venv/bin/python ]; then py=.venv/bin/python
else py=python3
fi
mkdir -p "$work"
if [ -z "$docs" ]; then
  if [ $smoke = 1 ]; then docs=$work/benchmarks.md; cp docs/benchmarks.md "$docs"; else docs=docs/benchmarks.md; fi
fi
export PYTHONUNBUFFERED=1

if [ $smoke = 1 ]; then
  device=cpu
  sizes="tiny"
  step_flags="--precision fp32 --batch 1 --tokens 8 --steps 1 --warmup 0 --threads 1"
  memory_flags="--size tiny --steps 1 --precision fp32 --device cpu --eval-utterances 1"
  finetune_flags="--device cpu --quick"
  transcribe_flags="--device cpu --clips 2 --threads 1 --systems ours-fast,faster-whisper-int8"
else
  device=cuda
  sizes="tiny base small"
  step_flags="--precision bf16 --batch 16 --tokens 64 --steps 10 --threads 8"
  memory_flags="--size small --steps 8 --device cuda --limit-gib 6"
  finetune_flags="--device cuda"
  transcribe_flags="--device cuda --clips 563 --rounds 2 --threads 8 --batch_size 32 --fast_batch_size 64
    --systems ours-fp32,ours-fast,faster-whisper-fp16,faster-whisper-int8"
fi

failed=()
ran=()
# run NAME REPORT CMD...: the command's stdout goes to the screen and $work/NAME.out, its stderr to
# $work/NAME.log; $work/NAME.md gets its report: stdout from the first line matching the regex REPORT
# on (the scripts print their tables last, after the training loop's progress lines), else all of it.
run() {
  local name=$1 report=$2; shift 2
  echo "== $name: $*" >&2
  ran+=("$name")
  "$@" 2>"$work/$name.log" | tee "$work/$name.out"
  local rc=${PIPESTATUS[0]}
  awk -v p="$report" 'found || $0 ~ p {found = 1; print}' "$work/$name.out" > "$work/$name.md"
  [ -s "$work/$name.md" ] || cp "$work/$name.out" "$work/$name.md"
  if [ "$rc" != 0 ]; then
    failed+=("$name")
    tail -n 20 "$work/$name.log" >&2
    { echo; echo "**failed** (exit code $rc): $(grep -v '^\s*$' "$work/$name.log" | tail -n 1)"; } >> "$work/$name.md"
  fi
}
wanted() { [[ ",$only," == *",$1,"* ]]; }

if wanted train_step; then
  for size in $sizes; do
    # shellcheck disable=SC2086  # the flag lists are meant to split
    run "train_step_$size" "random weights" "$py" bench/train_step.py --model "$size" --random-init --device $device $step_flags
  done
fi
if wanted memory; then
  # shellcheck disable=SC2086
  run memory "" "$py" bench/preset_memory.py --preset configs/6gb_lowmem.args $memory_flags
fi
if wanted finetune; then
  # shellcheck disable=SC2086
  run finetune "^base on " "$py" bench/finetune_cs.py $finetune_flags --data "$data/fillets-cv/cs" --output-dir "$work/finetune_cs"
fi
if wanted transcribe; then
  # shellcheck disable=SC2086
  run transcribe "^Machine:" "$py" bench/transcribe_cpu.py $transcribe_flags --manifest "$data/asterisk-en/manifest.jsonl" \
    --json "$work/transcribe.json"
fi

"$py" - "$docs" "$work" "$smoke" "${failed[*]:-}" "${ran[@]}" <<'EOF'
"""Replace the gpu_check section of the doc with this run's figures."""
import datetime
import sys
from pathlib import Path

import torch

docs, work, smoke, failed, ran = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", sys.argv[4], sys.argv[5:]
begin = "<!-- gpu_check: begin (written by bench/gpu_check.sh; edits here are overwritten) -->"
end = "<!-- gpu_check: end -->"
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")), "unknown CPU")
titles = {"train_step": "Training step against transformers, random weights (`bench/train_step.py`)",
          "memory": "`run_6gb_lowmem.sh` settings with a small-sized model (`bench/preset_memory.py`)",
          "finetune": "Fine-tuning base on Czech (`bench/finetune_cs.py`)",
          "transcribe": "Transcription against faster-whisper (`bench/transcribe_cpu.py`)"}
note = "CPU smoke run (`--cpu-smoke`): tiny sizes, 1 step, 2 clips, to show that every part runs. " if smoke else ""
lines = [begin, "## GPU check (`bench/gpu_check.sh`)", "",
         f"{note}Machine: {gpu}, {cpu}, torch {torch.__version__}; {datetime.date.today().isoformat()}. "
         f"Failed parts: {failed or 'none'}.", ""]
for part, title in titles.items():
    names = [name for name in ran if name == part or name.startswith(part + "_")]
    if names:
        lines += [f"### {title}", ""] + [(work / f"{name}.md").read_text().strip() + "\n" for name in names]
lines.append(end)
section = "\n".join(lines)
text = docs.read_text() if docs.is_file() else ""
if begin in text and end in text:
    text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
else:
    text = text.rstrip() + "\n\n" + section + "\n"
docs.write_text(text)
print(f"wrote the gpu_check section of {docs}", file=sys.stderr)
EOF

if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu_check: failed: ${failed[*]}" >&2
  exit 1
fi
echo "gpu_check: all parts ran" >&2
