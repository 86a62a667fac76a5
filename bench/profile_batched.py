"""Where the time of one `--batched` transcription goes: VAD, log-mel, encoder, decoder (its
forward passes, and per token step), and the search around them (logit rules, fallback
bookkeeping, Python), for each way of running the decoder.

  python bench/profile_batched.py --minutes 10                      # fp32, fp16 and int8 weights
  python bench/profile_batched.py --variants fp32,fp16+nofallback,fp32+compile

The recording is bench/longform_cpu.py's (asterisk-en prompts with pauses), cut to --minutes;
tiny.en, English, fallback with best_of 5 (`+nofallback`: none), batches of 8, 2 threads; `+compile`
decodes with `--compile`, `+trim` encodes chunks shorter than the window trimmed (`--trim_padding`). Each variant runs once
untimed (first-call costs, compilation included) and then once under cProfile; the table gives
each part's share of the profiled run's time and the plain wall time of an unprofiled third
run. Markdown to stdout, --json for the numbers. Plain fp32 runs on older checkouts too (copy the
script into one), which is how the "before" row of docs/benchmarks.md was taken.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.longform_cpu import _tiny_en_dir, build_recording  # noqa: E402
from bench.transcribe_cpu import cpu_name  # noqa: E402
from whisper_scratch.inference.batched import transcribe_batched  # noqa: E402
from whisper_scratch.inference.decoding import DecodingOptions, FallbackOptions  # noqa: E402
from whisper_scratch.inference.options import TranscribeOptions  # noqa: E402
from whisper_scratch.inference.vad import load_silero_vad  # noqa: E402
from whisper_scratch.model.checkpoint import load_model  # noqa: E402

# (part, the function whose cumulative time it is): cProfile's key is (file suffix, function name).
PARTS = (("VAD", "vad.py", "detect_speech"), ("log-mel", "features.py", "log_mel_window"),
         ("encoder", "whisper.py", "embed_audio"), ("decoder forward", "whisper.py", "logits"),
         ("decoding in all", "decoding.py", "decode_with_fallback"))


def _cumulative(stats: pstats.Stats, file_suffix: str, name: str) -> tuple[float, int]:
    """(seconds, calls) of every function `name` defined in a file ending in file_suffix."""
    seconds, calls = 0.0, 0
    for (file, _, func), (_, n_calls, _, cumtime, _) in stats.stats.items():
        if func == name and file.endswith(file_suffix):
            seconds, calls = seconds + cumtime, calls + n_calls
    return seconds, calls


def profile(variant: str, audio, threads: int) -> dict:
    """variant: fp32, fp16 or int8 weights, then options after "+" (nofallback, compile, trim)."""
    torch.set_num_threads(threads)
    weights, *options = variant.split("+")
    model = load_model(_tiny_en_dir()).eval()
    if weights != "fp32":
        from whisper_scratch.model.quantize import quantize_linear

        quantize_linear(model, weights)
    detector = load_silero_vad()
    # Options are only named when used, so that plain fp32 also profiles older checkouts.
    compiled = {"compile": True} if "compile" in options else {}
    trimmed = {"trim_padding": True} if "trim" in options else {}
    opts = TranscribeOptions(decoding=DecodingOptions(language="en", best_of=5, **compiled),
                             fallback=FallbackOptions((0.0,)) if "nofallback" in options else FallbackOptions(),
                             batch_size=8, progress=False, **trimmed)
    start = time.perf_counter()
    transcribe_batched(model, audio, opts, detector=detector)
    first = time.perf_counter() - start
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.runcall(transcribe_batched, model, audio, opts, detector=detector)
    profiled = time.perf_counter() - start
    start = time.perf_counter()
    result = transcribe_batched(model, audio, opts, detector=detector)
    wall = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    parts = {name: _cumulative(stats, suffix, func) for name, suffix, func in PARTS}
    steps = parts["decoder forward"][1]
    decoding = parts["decoding in all"][0]
    return {"variant": variant, "first_run_s": first, "wall_s": wall,
            "profiled_s": profiled, "decoder_calls": steps,
            "shares": {"VAD": parts["VAD"][0] / profiled, "log-mel": parts["log-mel"][0] / profiled,
                       "encoder": parts["encoder"][0] / profiled,
                       "decoder forward": parts["decoder forward"][0] / profiled,
                       "search and rules": (decoding - parts["decoder forward"][0]) / profiled},
            "decoder_ms_per_call": parts["decoder forward"][0] / max(steps, 1) * 1000,
            "segments": len(result["segments"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, default=REPO.parent / "shared/data/asterisk-en/manifest.jsonl")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--variants", default="fp32,fp16,int8",
                   help="comma-separated: fp32, fp16 or int8 weights, each with +nofallback, +compile, +trim")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    audio, _ = build_recording(args.manifest, args.minutes)
    rows = [profile(v, audio, args.threads) for v in args.variants.split(",")]
    print(f"Machine: {cpu_name()}, {args.threads} threads, torch {torch.__version__}; tiny.en, "
          f"{len(audio) / 16000 / 60:.1f} minutes, --batched, batches of 8\n")
    parts = list(rows[0]["shares"])
    print("| decoder | wall (s) | first run (s) | " + " | ".join(parts) + " | decoder ms / call | calls |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in parts) + " | ---: | ---: |")
    for r in rows:
        shares = " | ".join(f"{r['shares'][k] * 100:.0f} %" for k in parts)
        print(f"| {r['variant']} | {r['wall_s']:.1f} | {r['first_run_s']:.1f} | {shares} | "
              f"{r['decoder_ms_per_call']:.1f} | {r['decoder_calls']} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": cpu_name(), "threads": args.threads, "minutes": args.minutes,
                                         "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
