"""Fine-tuning on a CPU budget: multilingual base on the Czech `fillets-cv/cs` train split with the
preset `configs/cpu_finetune.args`, scored on the whole `test` split before and after with
`transcribe.py --mode evaluate` (default options, standard scoring), plus the checks that a
fine-tune keeps what users need: timestamps on the test clips, and a 5-minute recording joined
from test clips transcribed as one file against the same clips one by one.

  python bench/finetune_cs.py                        # the documented run (docs/finetune.md)
  python bench/finetune_cs.py --quick                # a smoke run on tests/data/cv_tiny (minutes)

Writes OUT/results.json, prints a markdown table, and draws dev WER against training minutes
(docs/finetune_cs_wer.png with --plot).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from whisper_scratch.audio.geometry import SAMPLE_RATE  # noqa: E402
from whisper_scratch.audio.io import load_audio  # noqa: E402
from whisper_scratch.cli import (
    train,  # noqa: E402
    transcribe,  # noqa: E402
)
from whisper_scratch.data.manifest import read_manifest  # noqa: E402
from whisper_scratch.evaluation.metrics import error_rates  # noqa: E402
from whisper_scratch.model.packaged import packaged_model  # noqa: E402

PAUSE_S = 1.0  # silence between the clips of the joined recording


def evaluate(model: Path, tsv: Path, language: str, out: Path, *extra: str) -> dict:
    args = ["--model_path", str(model), "--mode", "evaluate", "--reference_file", str(tsv), "--language", language,
            "--output_file", str(out), *extra]
    if transcribe.main(args) not in (0, 1):
        raise SystemExit(f"evaluation of {model} on {tsv} failed")
    return json.loads(out.read_text())


def speech_onset(audio: np.ndarray, frame: int = 320) -> float:
    """Seconds to the first 20 ms frame within 35 dB of the clip's loudest (a reference for where
    speech starts, to check predicted segment starts against)."""
    n = len(audio) // frame
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    return float(np.argmax(db > max(db.max() - 35, -60)) * frame / SAMPLE_RATE)


def timestamp_check(model: Path, tsv: Path, language: str, work: Path) -> dict:
    """Transcribe the split's clips with timestamps; count clips whose first segment starts within
    0.5 s of the speech onset and whose last ends within 1 s of the clip's end."""
    rows = read_manifest(tsv)
    out = work / "timestamps.json"
    transcribe.main(["--model_path", str(model), "--mode", "batch", "--manifest", str(tsv), "--language", language,
                     "--timestamps", "--output_file", str(out)])
    results = {r["audio"]: r for r in json.loads(out.read_text())}
    good = with_segments = 0
    for row in rows:
        segments = results.get(str(row.audio), {}).get("segments") or []
        if not segments:
            continue
        with_segments += 1
        audio = load_audio(row.audio)
        start_ok = abs(segments[0]["start"] - speech_onset(audio)) <= 0.5
        end_ok = abs(segments[-1]["end"] - len(audio) / SAMPLE_RATE) <= 1.0
        good += start_ok and end_ok
    return {"clips": len(rows), "with_segments": with_segments, "well_formed": good}


def longform_check(model: Path, tsv: Path, language: str, work: Path, minutes: float) -> dict:
    """Join the split's first clips (PAUSE_S apart) into one recording of about `minutes`, transcribe
    it as one file, and score it against the same clips transcribed one by one."""
    import soundfile as sf

    rows, pieces, texts, total = read_manifest(tsv), [], [], 0.0
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), dtype=np.float32)
    for row in rows:
        if total >= minutes * 60:
            break
        audio = load_audio(row.audio)
        pieces += [audio, pause]
        texts.append(row.text)
        total += len(audio) / SAMPLE_RATE + PAUSE_S
    long_path = work / "joined.flac"
    sf.write(long_path, np.concatenate(pieces), SAMPLE_RATE)
    joined_json = work / "joined.json"
    code = transcribe.main(["--model_path", str(model), "--audio_path", str(long_path), "--language", language,
                            "--output_file", str(joined_json)])
    if code != 0:
        return {"seconds": round(total, 1), "clips": len(texts), "error": f"transcribe.py exit code {code}"}
    joined = json.loads(joined_json.read_text())
    joined_text = joined[0]["text"] if isinstance(joined, list) else joined["text"]
    subset = work / "joined_clips.jsonl"
    subset.write_text("".join(json.dumps({"audio": str(r.audio), "text": r.text}) + "\n" for r in rows[:len(texts)]))
    out = work / "one_by_one.json"
    transcribe.main(["--model_path", str(model), "--mode", "evaluate", "--manifest", str(subset), "--language", language,
                     "--output_file", str(out)])
    one_by_one = json.loads(out.read_text())
    reference = " ".join(texts)
    return {"seconds": round(total, 1), "clips": len(texts),
            "wer_joined": error_rates([reference], [joined_text], language)["wer"],
            "wer_one_by_one": one_by_one["wer"]}


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    import torch

    return f"{model}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def plot(results: dict, args: argparse.Namespace) -> None:
    """Dev WER against training minutes into args.plot, with the --compare runs' curves."""
    from whisper_scratch.training.plots import plot_wer_against_minutes

    earlier = {}
    for item in args.compare:
        label, _, path = item.rpartition("=")
        curve = json.loads(Path(path).read_text())["dev_curve"]
        earlier[label or path] = (curve["minutes"], curve["wer"])
    curve = results["dev_curve"]
    label = " ".join([Path(results["preset"]).name, *results["extra_flags"], "(dev)"])
    plot_wer_against_minutes(curve["minutes"], curve["wer"], {**results, "goal": args.goal, "label": label},
                             args.plot, earlier)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared/data/fillets-cv/cs")
    p.add_argument("--language", default="cs")
    p.add_argument("--preset", type=Path, default=REPO / "configs/cpu_finetune.args")
    p.add_argument("--output-dir", type=Path, default=REPO / "runs/finetune_cs")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--before", type=Path, help="reuse this evaluation JSON of the stock model instead of re-running it")
    p.add_argument("--longform-minutes", type=float, default=5.0)
    p.add_argument("--plot", type=Path, help="draw dev WER against training minutes into this PNG")
    p.add_argument("--goal", type=float, default=0.45, help="test WER aimed at, drawn in the plot")
    p.add_argument("--compare", action="append", default=[], metavar="LABEL=RESULTS_JSON",
                   help="also draw the dev curve of an earlier run's results.json (repeatable)")
    p.add_argument("--plot-only", type=Path, metavar="RESULTS_JSON",
                   help="only draw --plot from this results.json (and --compare), running nothing")
    p.add_argument("--quick", action="store_true", help="smoke run: tests/data/cv_tiny, 2 steps")
    p.add_argument("--trained-since", type=float, metavar="UNIX_TIME",
                   help="OUTPUT_DIR already holds a run of the preset, started at this time: only evaluate and check it")
    args, extra = p.parse_known_args()
    if args.plot_only:
        plot(json.loads(args.plot_only.read_text()), args)
        return
    import torch

    torch.set_num_threads(args.threads)
    if args.quick:
        args.data = REPO / "tests/data/cv_tiny"
        extra += ["--max-steps", "2", "--train-batch-size", "4"]
        args.longform_minutes = 0.3
    out = args.output_dir.resolve()
    work = out / "bench"
    work.mkdir(parents=True, exist_ok=True)
    stock = packaged_model("base")
    test = args.data / "test.tsv"

    if args.before:  # scored again, so that an older evaluation JSON counts the way this one does
        utterances = json.loads(args.before.read_text())["utterances"]
        before = error_rates([u["reference"] for u in utterances], [u["hypothesis"] for u in utterances], args.language)
    else:
        before = evaluate(stock, test, args.language, work / "before.json")
    started = time.time() if args.trained_since is None else args.trained_since
    if args.trained_since is None:
        code = train.main([f"@{args.preset}", "--local-data-dir", str(args.data), "--language", args.language,
                           "--init", str(stock), "--output-dir", str(out), "--device", args.device, *extra])
        if code != 0:
            raise SystemExit(f"training failed (exit code {code})")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_minutes = (records[-1]["wall_time"] - started) / 60
    tuned = out / "best"
    after = evaluate(tuned, test, args.language, work / "after.json")
    curve = [(r["wall_time"] - started) / 60 for r in records if "eval_wer" in r], \
            [r["eval_wer"] for r in records if "eval_wer" in r]
    steps = max((r["step"] for r in records), default=0)
    epochs = max((r.get("epoch", 0) for r in records), default=0) + 1
    results = {
        "machine": machine(), "preset": str(args.preset.resolve().relative_to(REPO)), "extra_flags": extra,
        "steps": steps, "epochs": epochs, "train_minutes": round(train_minutes, 1),
        "test_clips": len(after["utterances"]),
        "before": {"wer": before["wer"], "cer": before["cer"]}, "after": {"wer": after["wer"], "cer": after["cer"]},
        "dev_curve": {"minutes": curve[0], "wer": curve[1]},
        "timestamps": timestamp_check(tuned, test, args.language, work),
        "longform": longform_check(tuned, test, args.language, work, args.longform_minutes),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, args)
    ts, lf = results["timestamps"], results["longform"]
    print(f"\nbase on {args.data.name}: {steps} steps, {epochs} epochs, {train_minutes:.1f} min of training "
          f"(caching included); {machine()}\n")
    print("| | WER | CER |\n| --- | ---: | ---: |")
    print(f"| stock base | {100 * before['wer']:.1f} % | {100 * before['cer']:.1f} % |")
    print(f"| fine-tuned (`best/`) | {100 * after['wer']:.1f} % | {100 * after['cer']:.1f} % |")
    print(f"\ntimestamps: {ts['well_formed']}/{ts['clips']} clips well formed ({ts['with_segments']} with segments)")
    print(f"long-form: {lf}")


if __name__ == "__main__":
    main()
