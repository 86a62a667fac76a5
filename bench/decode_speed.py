"""Decoding speed: our greedy decoding (static KV cache) against Hugging Face transformers'
`generate` on the same random weights, batch and precision. Random weights make the text
meaningless, so both decode a fixed number of tokens (end of text suppressed: ours through
`suppress_tokens`, theirs through `min_new_tokens`); the encoder runs in both timings.

  python bench/decode_speed.py --size base --device cuda --dtype fp16 --batch 16 --tokens 128
  python bench/decode_speed.py --size tiny --device cpu --dtype fp32 --batch 2 --tokens 8 --rounds 1
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from whisper_scratch.common.precision import DTYPES  # noqa: E402
from whisper_scratch.inference.decoding import DecodingOptions, decode  # noqa: E402
from whisper_scratch.model.formats.huggingface import save_huggingface  # noqa: E402
from whisper_scratch.model.loaded import whisper_vocabulary  # noqa: E402
from whisper_scratch.model.whisper import SIZES, Whisper  # noqa: E402


def timed(fn, device: torch.device, rounds: int) -> tuple[float, object]:
    """Median seconds of `rounds` calls of fn() after one untimed call (kernel loading, autotuning)."""
    out = fn()
    times = []
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], out


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="tiny", choices=sorted(SIZES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--tokens", type=int, default=64, help="tokens decoded per row (fixed)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--systems", default="ours,transformers")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    ours = Whisper(SIZES[args.size])
    tokenizer = whisper_vocabulary(ours)
    mel = torch.randn(args.batch, ours.dims.n_mels, 2 * ours.dims.n_audio_ctx)
    rows = {}
    if "transformers" in args.systems:
        from transformers import WhisperForConditionalGeneration

        with tempfile.TemporaryDirectory() as folder:
            save_huggingface(ours, folder, tokenizer)
            theirs = WhisperForConditionalGeneration.from_pretrained(folder).to(device, dtype).eval()
        features = mel.to(device, dtype)
        language = "en" if tokenizer.is_multilingual else None

        @torch.no_grad()
        def generate():
            return theirs.generate(features, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                                   do_sample=False, num_beams=1, language=language, task="transcribe",
                                   return_timestamps=False)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds, _ = timed(generate, device, args.rounds)
        rows["transformers generate"] = (seconds, peak_mib(device))
        del theirs
    if "ours" in args.systems:
        model = ours.to(device, dtype).eval()
        options = DecodingOptions(language="en" if tokenizer.is_multilingual else None, sample_len=args.tokens,
                                  suppress_tokens=(tokenizer.eot,), without_timestamps=True)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds, results = timed(lambda: decode(model, mel.to(device), options, tokenizer), device, args.rounds)
        lengths = {len(r.tokens) for r in results}
        if lengths != {args.tokens}:
            raise SystemExit(f"ours decoded {sorted(lengths)} tokens a row, not {args.tokens}")
        rows["ours"] = (seconds, peak_mib(device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"\n{args.size} (random weights), batch {args.batch} x {args.tokens} tokens, {args.dtype}, {name}, "
          f"median of {args.rounds}\n")
    print("| system | seconds | tokens/s | peak memory (MiB) | time / transformers' |")
    print("| --- | --- | --- | --- | --- |")
    base = rows.get("transformers generate", (None,))[0]
    for system, (seconds, peak) in rows.items():
        ratio = f"{seconds / base:.2f}" if base else "-"
        memory = f"{peak:.0f}" if peak is not None else "-"
        print(f"| {system} | {seconds:.3f} | {args.batch * args.tokens / seconds:.0f} | {memory} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
