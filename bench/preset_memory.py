"""Peak GPU memory of a training preset (`configs/*.args`) through the real training loop, with a
model of a given size: `--limit-gib` fails the run (exit code 1) when the peak allocated memory
(torch.cuda.max_memory_allocated, the whole run: weights, optimizer, steps, evaluation) is over it.

  python bench/preset_memory.py --preset configs/6gb_lowmem.args --size small --device cuda --limit-gib 6

The weights are random (nothing to download; memory does not depend on their values) but the
vocabulary is the size's own Whisper BPE, so the output layer and the logits are full-size. The
preset's flags are used as they are, except the data, the number of steps and evaluation.
`--precision fp16` by default: 6 GB cards predate bf16, and fp16 adds the gradient scaler.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from whisper_scratch.cli import train  # noqa: E402
from whisper_scratch.model.checkpoint import save_model  # noqa: E402
from whisper_scratch.model.whisper import SIZES, Whisper  # noqa: E402
from whisper_scratch.training.loop import Trainer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", type=Path, default=REPO / "configs/6gb_lowmem.args")
    p.add_argument("--size", default="small", choices=sorted(SIZES), help="model size (random weights)")
    p.add_argument("--data", type=Path, default=REPO / "tests/data/cv_tiny", help="Common Voice language folder")
    p.add_argument("--language", default="cs", help="the data's language (default cs: cv_tiny is Czech)")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps")
    p.add_argument("--eval-utterances", type=int, default=4, help="clips in the evaluation after training")
    p.add_argument("--precision", default="fp16", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--limit-gib", type=float, default=6.0)
    args = p.parse_args(argv)
    if not args.preset.is_file():
        p.error(f"{args.preset}: preset file not found (one of configs/*.args)")

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        init = Path(tmp) / "init"
        init.mkdir()
        save_model(Whisper(SIZES[args.size]), init)
        flags = [f"@{args.preset}", "--init", str(init), "--local-data-dir", str(args.data),
                 "--language", args.language, "--output-dir", str(Path(tmp) / "run"), "--max-steps", str(args.steps),
                 "--no-eval-before", "--eval-every", str(10 ** 9), "--save-every", str(10 ** 9),
                 "--max-eval-utterances", str(args.eval_utterances), "--precision", args.precision,
                 "--device", args.device]
        with redirect_stdout(sys.stderr):  # the loop's progress lines; stdout is for the verdict
            summary = Trainer(train.config_from_args(train.parse_args(flags))).run()
    what = f"{args.preset.name} with {args.size} (random weights), {args.steps} steps, {args.precision}"
    if "peak_gpu_memory_gib" not in summary:
        print(f"{what} on {args.device}: ran; peak GPU memory is measured on a GPU only")
        return 0
    peak = summary["peak_gpu_memory_gib"]
    verdict = "within" if peak <= args.limit_gib else "OVER"
    print(f"{what} on {torch.cuda.get_device_name(args.device)}: peak allocated GPU memory {peak:.2f} GiB, "
          f"{verdict} the {args.limit_gib:g} GiB limit")
    return 0 if peak <= args.limit_gib else 1


if __name__ == "__main__":
    sys.exit(main())
