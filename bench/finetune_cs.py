"""Fine-tuning on a CPU budget: multilingual base on the Czech `fillets-cv/cs` train split, with
WER/CER on the `test` split before and after (a fixed subset, greedy, the same decoding both times).

The budget fits a 2-core CPU: the encoder is frozen (Whisper's acoustic features carry over to a
new language; the decoder's spelling and vocabulary are what base gets wrong in Czech), batches
of 8, a few hundred steps.

  python bench/finetune_cs.py --steps 150 --eval-utterances 100
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train  # noqa: E402
from whisper_scratch.packaged import packaged_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared/data/fillets-cv/cs")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--eval-utterances", type=int, default=100)
    p.add_argument("--output-dir", type=Path, default=REPO / "runs/finetune_cs")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    started = time.time()
    code = train.main([
        "--local-data-dir", str(args.data), "--language", "cs", "--eval-split", "test",
        "--init", str(packaged_model("base")), "--freeze-encoder",
        "--max-steps", str(args.steps), "--train-batch-size", str(args.batch), "--eval-batch-size", "16",
        "--learning-rate", str(args.learning_rate), "--warmup-steps", "10", "--schedule", "linear",
        "--max-eval-utterances", str(args.eval_utterances), "--eval-every", str(10 ** 9),
        "--save-every", str(10 ** 9), "--output-dir", str(args.output_dir), "--num-workers", "1"])
    if code != 0:
        raise SystemExit(code)
    records = [json.loads(line) for line in (args.output_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_wer" in r]
    before, after = evals[0], evals[-1]
    minutes = (time.time() - started) / 60
    print(f"\nbase on fillets-cv/cs: {args.steps} steps x batch {args.batch} (encoder frozen), "
          f"{args.eval_utterances} test clips, {minutes:.1f} min in all\n")
    print("| | WER | CER |\n| --- | --- | --- |")
    print(f"| before | {100 * before['eval_wer']:.1f}% | {100 * before['eval_cer']:.1f}% |")
    print(f"| after {after['step']} steps | {100 * after['eval_wer']:.1f}% | {100 * after['eval_cer']:.1f}% |")


if __name__ == "__main__":
    main()
