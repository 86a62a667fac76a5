#!/usr/bin/env bash
# 16 GB+ GPU preset: fine-tune small, batch 16.   ./run.sh DATA_DIR [train.py flags…]
# With no data: the embedded demo. It trains a small Whisper from scratch (with its own SentencePiece
# vocabulary) on the 16 real clips shipped in tests/data, evaluates before and after, then transcribes
# with the result. A few minutes on a 2-core CPU; uses a GPU when there is one.
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -gt 0 ] || [ -n "${DATA_DIR:-}" ]; then
  exec scripts/preset.sh configs/run.args "$@"
fi
scripts/setup_env.sh
out=${OUTPUT_DIR:-runs/demo}
rm -rf "$out"
.venv/bin/python train.py @configs/demo.args --output-dir "$out"
.venv/bin/python transcribe.py --model_path "$out/best" --mode evaluate \
  --manifest tests/data/asterisk16/manifest.jsonl --language en --output_file "$out/eval.json"
.venv/bin/python transcribe.py --model_path "$out/best" --language en --audio_path tests/data/asterisk16/audio/hello-world.flac
echo "demo done: model in $out/best, curves in $out/training_curves.png, evaluation in $out/eval.json"
