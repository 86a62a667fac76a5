"""Transcribe or evaluate with any checkpoint we load (OpenAI .pt, Hugging Face, CTranslate2, ours).

  python transcribe.py --model_path base --audio_path clip.flac
  python transcribe.py --model_path ckpt/ --mode batch --audio_dir clips/ --output_file out.json
  python transcribe.py --model_path base --mode evaluate --manifest test.jsonl --output_file eval.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from whisper_scratch.checkpoint import load_model
from whisper_scratch.decoding import DecodingOptions
from whisper_scratch.manifest import ManifestError, list_audio, read_manifest
from whisper_scratch.metrics import error_rates
from whisper_scratch.transcriber import TranscribeOptions, transcribe_files
from whisper_scratch.writers import write_evaluation, write_results
from tokenizer import load_tokenizer_dir
from tokenizer.base import CONFIG_FILE

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The original project's underscore flags, with dash spellings as aliases.
    p.add_argument("--model_path", "--model-path", "--model", default="base",
                   help="size name (tiny, base, …, large-v3-turbo) to download, or a local checkpoint file/folder")
    p.add_argument("--mode", choices=["single", "directory", "batch", "evaluate"], default="single")
    p.add_argument("--audio_path", "--audio-path", action="append", default=[], help="audio file (repeatable)")
    p.add_argument("--audio_dir", "--audio-dir", help="folder of audio files (directory and batch modes)")
    p.add_argument("--manifest", help="JSONL {audio, text} / CSV / Common Voice .tsv (batch and evaluate)")
    p.add_argument("--reference_file", "--reference-file", help="evaluate: references, same formats as --manifest")
    p.add_argument("--output_file", "--output-file", help="txt, json, srt, vtt or tsv, chosen by extension")
    p.add_argument("--language", default=None, help="language code; default: detect (multilingual models)")
    p.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    p.add_argument("--beam_size", "--beam-size", type=int, default=None, help="beam search width (default greedy)")
    p.add_argument("--batch_size", "--batch-size", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="default fp16 on GPU, fp32 on CPU")
    p.add_argument("--timestamps", action="store_true", help="decode segment timestamps (implied by srt/vtt/tsv)")
    p.add_argument("--initial_prompt", "--initial-prompt", default=None, help="text to condition the first window on")
    p.add_argument("--no_fallback", "--no-fallback", action="store_true", help="greedy only, no temperature fallback")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        inputs, references = _inputs(args)
        model = load_model(args.model_path, device=args.device, dtype=_dtype(args))
    except (ManifestError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # A model trained from scratch carries its own vocabulary beside the weights.
    model_dir = _model_dir(args.model_path)
    tokenizer = load_tokenizer_dir(model_dir) if (model_dir / CONFIG_FILE).is_file() else None
    timestamps = args.timestamps or (args.output_file or "").lower().endswith((".srt", ".vtt", ".tsv"))
    opts = TranscribeOptions(
        decoding=DecodingOptions(task=args.task, language=args.language, beam_size=args.beam_size,
                                 without_timestamps=not timestamps, prompt=args.initial_prompt),
        batch_size=args.batch_size if args.mode != "single" else 1,
        temperatures=(0.0,) if args.no_fallback else TranscribeOptions.temperatures,
        progress=args.mode != "single")
    results, failed = transcribe_files(model, inputs, opts, tokenizer)
    for path, error in failed:
        print(f"skipped: {error}", file=sys.stderr)

    if args.mode == "evaluate":
        return _evaluate(args, results, references, failed)
    if args.output_file:
        write_results(results, args.output_file)
        print(f"wrote {len(results)} transcripts to {args.output_file}", file=sys.stderr)
    else:
        for r in results:
            print(r["text"] if args.mode == "single" else f"{r['audio']}\t{r['text']}")
    if failed:
        print(f"{len(failed)} of {len(inputs)} files could not be read (listed above)", file=sys.stderr)
        return 1
    return 0


def _inputs(args: argparse.Namespace) -> tuple[list[Path], dict[Path, str]]:
    """Audio paths for the mode, and references by path for evaluate."""
    if args.mode == "evaluate":
        listing = args.manifest or args.reference_file
        if not listing:
            raise ValueError("evaluate needs --manifest (or --reference_file) with audio and text")
        rows = read_manifest(listing)
        if not rows:
            raise ValueError(f"{listing} lists no utterances")
        return [r.audio for r in rows], {r.audio: r.text for r in rows}
    if args.mode == "single":
        if len(args.audio_path) != 1:
            raise ValueError("single mode needs exactly one --audio_path")
        return [Path(args.audio_path[0])], {}
    paths = [Path(p) for p in args.audio_path]
    if args.manifest:
        paths += [r.audio for r in read_manifest(args.manifest)]
    if args.audio_dir:
        if not Path(args.audio_dir).is_dir():
            raise FileNotFoundError(f"audio folder not found: {args.audio_dir} (check --audio_dir)")
        paths += list_audio(args.audio_dir)
    if not paths:
        raise ValueError(f"{args.mode} mode needs --audio_dir, --manifest or --audio_path with at least one audio file")
    return paths, {}


def _evaluate(args: argparse.Namespace, results: list[dict], references: dict[Path, str],
              failed: list[tuple[Path, str]]) -> int:
    hyps = {Path(r["audio"]): r["text"] for r in results}
    # An unreadable clip counts as an empty hypothesis: skipping it would flatter the WER.
    utterances = [{"audio": str(p), "reference": ref, "hypothesis": hyps.get(p, "")} for p, ref in references.items()]
    language = args.language or (results[0]["language"] if results else None)
    rates = error_rates([u["reference"] for u in utterances], [u["hypothesis"] for u in utterances], language)
    if args.output_file:
        write_evaluation(args.output_file, rates["wer"], rates["cer"], utterances)
    print(f"WER {rates['wer'] * 100:.2f}%  CER {rates['cer'] * 100:.2f}%  on {len(utterances)} utterances"
          f" ({len(failed)} unreadable)")
    return 0


def _dtype(args: argparse.Namespace) -> torch.dtype:
    if args.dtype:
        return DTYPES[args.dtype]
    return torch.float16 if str(args.device).startswith("cuda") else torch.float32


def _model_dir(model_path: str) -> Path:
    path = Path(model_path)
    return path if path.is_dir() else path.parent


if __name__ == "__main__":
    sys.exit(main())
