"""The LM table of docs/lm.md: one model on the whole Czech test split (standard scoring), decoded
greedily, with beam 5, and with beam 5 fused with each of two n-gram LMs: the train split's
transcripts alone, and those plus `text/wesnoth_cs.txt`. lm_alpha and lm_beta are tuned by
`whisper-scratch lm tune` on dev.tsv only; test.tsv is decoded once per row, after tuning.

  python bench/lm_czech.py --model base --out bench/results/lm_czech_base.json
  python bench/lm_czech.py --model runs/finetune_cs/best --out bench/results/lm_czech_finetuned.json

Rows run in the order most worth having first (beam 5, then beam 5 with the larger LM, ...); an LM
is built and tuned just before its first row, and the JSON is rewritten after each step, so a run
that is stopped keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.transcribe_cpu import cpu_name  # noqa: E402
from whisper_scratch.cli import transcribe  # noqa: E402
from whisper_scratch.lm.command import main as lm_command  # noqa: E402
from whisper_scratch.model.packaged import packaged_model  # noqa: E402

LMS = {"train": ["train.tsv"], "train+text": ["train.tsv", "../../text/wesnoth_cs.txt"]}
# (row, LM or None, beam or None), in the order they run.
ROWS = [("beam 5", None, 5), ("beam 5 + LM (train + text)", "train+text", 5),
        ("beam 5 + LM (train)", "train", 5), ("greedy", None, None)]


def timed(fn, *args) -> tuple[int, float]:
    started = time.perf_counter()
    code = fn(*args)
    return code, time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="base", help="base (the packaged stock weights) or a checkpoint folder")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared/data/fillets-cv/cs")
    p.add_argument("--out", type=Path, required=True, help="results JSON (rewritten after each row)")
    p.add_argument("--work", type=Path, default=REPO / "runs/lm_czech", help="LMs, tuning and evaluation files")
    p.add_argument("--order", type=int, default=4)
    p.add_argument("--tune-clips", type=int, default=None, help="tune on the first N dev clips (default: all)")
    p.add_argument("--budget", type=int, default=16, help="lm tune's trial budget per LM")
    p.add_argument("--alphas", default=None, help="lm tune's --alphas, comma-separated (default: its grid)")
    p.add_argument("--betas", default=None, help="lm tune's --betas, comma-separated (default: its grid)")
    p.add_argument("--rows", default=",".join(r for r, _, _ in ROWS), help="which rows, comma-separated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true",
                   help="keep the rows and tuned LMs already in --out (same model and tuning settings) and run the rest")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = str(packaged_model("base")) if args.model == "base" else args.model
    args.work.mkdir(parents=True, exist_ok=True)
    wanted = args.rows.split(",")
    results: dict = {"model": args.model, "machine": f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}",
                     "test_clips": None,
                     "tune_clips": args.tune_clips or "all", "budget": args.budget,
                     "grid": {"alphas": args.alphas or "default", "betas": args.betas or "default"}, "lms": {}, "rows": {}}

    if args.resume and args.out.exists():
        previous = json.loads(args.out.read_text())
        settings = ("model", "tune_clips", "budget", "grid")
        if any(previous[k] != results[k] for k in settings):
            sys.exit(f"error: {args.out} was made with other settings "
                     f"({', '.join(f'{k}={previous[k]}' for k in settings)}); give the same or another --out")
        results["rows"], results["test_clips"] = previous["rows"], previous["test_clips"]
        results["lms"] = previous["lms"]  # kept for the record; one whose file is gone is built again if a row needs it
        print(f"resuming {args.out}: rows {', '.join(results['rows']) or 'none'}; tuned LMs {', '.join(results['lms']) or 'none'}")

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))

    def build_and_tune(name: str) -> dict:
        """The LM `name` built from its texts and tuned on dev, once, before its first row."""
        if name in results["lms"] and (args.work / results["lms"][name]["file"]).exists():
            return results["lms"][name]
        arpa = args.work / f"cs_{name.replace('+', '_')}.arpa"
        flags = [f for t in LMS[name] for f in ("--text", str(args.data / t))]
        code, seconds = timed(lm_command, ["build", *flags, "--language", "cs", "--order", str(args.order),
                                           "--out", str(arpa), "--no-progress"])
        assert code == 0, f"lm build {name} failed"
        tuned = args.work / f"tune_{arpa.stem}.json"
        tune = ["tune", "--model_path", model, "--lm", str(arpa), "--manifest", str(args.data / "dev.tsv"),
                "--language", "cs", "--budget", str(args.budget), "--output", str(tuned)]
        if args.tune_clips:
            tune += ["--max_clips", str(args.tune_clips)]
        for flag in ("alphas", "betas"):
            if getattr(args, flag):
                tune += [f"--{flag}", *getattr(args, flag).split(",")]
        code, tune_seconds = timed(lm_command, tune)
        assert code == 0, f"lm tune {name} failed"
        results["lms"][name] = {"file": arpa.name, "bytes": arpa.stat().st_size, "build_s": round(seconds, 1),
                                "tune_s": round(tune_seconds), "tuned": json.loads(tuned.read_text())}
        save()
        return results["lms"][name]

    for row, lm, beam in ROWS:
        if row not in wanted or row in results["rows"]:
            continue
        out = args.work / f"test_{row.replace(' ', '_').replace('+', '').replace('(', '').replace(')', '')}.json"
        argv = ["--model_path", model, "--mode", "evaluate", "--reference_file", str(args.data / "test.tsv"),
                "--language", "cs", "--output_file", str(out)]
        if beam:
            argv += ["--beam_size", str(beam)]
        if lm:
            built = build_and_tune(lm)
            best = built["tuned"]["best"]
            argv += ["--lm", str(args.work / built["file"]), "--lm_alpha", str(best["lm_alpha"]),
                     "--lm_beta", str(best["lm_beta"])]
        code, seconds = timed(transcribe.main, argv)
        assert code in (0, 1), f"evaluation {row} failed"
        report = json.loads(out.read_text())
        results["test_clips"] = len(report["utterances"])
        results["rows"][row] = {"wer": report["wer"], "cer": report["cer"], "wall_s": round(seconds),
                                "machine": results["machine"],  # a resumed run may be on another machine
                                **({"lm_alpha": best["lm_alpha"], "lm_beta": best["lm_beta"]} if lm else {})}
        save()
    print(f"\n{args.model} on {results['test_clips']} test clips ({results['machine']}):\n")
    print("| decoding | lm_alpha, lm_beta (tuned on dev) | WER | CER | wall time |\n| --- | --- | ---: | ---: | ---: |")
    for row, r in results["rows"].items():
        weights = f"{r['lm_alpha']:g}, {r['lm_beta']:g}" if "lm_alpha" in r else ""
        print(f"| {row} | {weights} | {r['wer'] * 100:.1f} % | {r['cer'] * 100:.1f} % | {r['wall_s'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
