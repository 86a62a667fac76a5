"""Training step time and peak memory: our Whisper against Hugging Face transformers' Whisper with
the same weights, batch, precision and gradient checkpointing.

Each (system, setting) runs in a fresh subprocess so that peak memory is its own: on CUDA
torch.cuda.max_memory_allocated, on CPU the process's peak resident set (ru_maxrss) minus the
resident set after loading the weights (what the step itself needs).

  python bench/train_step.py --model tiny.en --batch 4 --steps 5            # CPU
  python bench/train_step.py --model base --batch 16 --precision bf16 --device cuda
  python bench/train_step.py --model small --random-init --device cuda      # no weights needed
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from whisper_scratch.model.checkpoint import load_model  # noqa: E402
from whisper_scratch.model.formats.huggingface import save_huggingface  # noqa: E402
from whisper_scratch.model.packaged import PACKAGES, packaged_model  # noqa: E402
from whisper_scratch.model.whisper import SIZES, Whisper  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def rss_mib() -> float:
    """Peak resident set of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def one_run(system: str, args: argparse.Namespace) -> dict:
    """Time `args.steps` optimizer steps after `args.warmup` untimed ones; runs inside a fresh process."""
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.random_init:
        ours = Whisper(SIZES[args.model])  # seeded above: both systems get the same weights
    else:
        ours = load_model(packaged_model(args.model) if args.model in PACKAGES else args.model)
    batch, n_tok = args.batch, args.tokens
    mel = torch.randn(batch, ours.dims.n_mels, 3000, device=device)
    tokens = torch.randint(0, 50000, (batch, n_tok), device=device)
    labels = torch.randint(0, 50000, (batch, n_tok), device=device)
    if system == "ours":
        model = ours.to(device)
        model.set_gradient_checkpointing(args.checkpointing)

        def loss_fn():
            logits = model(mel, tokens)
            return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
    else:
        from transformers import WhisperForConditionalGeneration

        folder = Path(tempfile.mkdtemp())
        save_huggingface(ours, folder)
        del ours
        model = WhisperForConditionalGeneration.from_pretrained(folder).to(device)
        model.config.use_cache = False
        if args.checkpointing:
            model.gradient_checkpointing_enable()

        def loss_fn():
            logits = model(input_features=mel, decoder_input_ids=tokens).logits
            return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten())
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    dtype = DTYPES[args.precision]
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    base_rss = current_rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for step in range(args.steps + args.warmup):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss = loss_fn()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss_mib() - base_rss)
    return {"system": system, "step_s": sorted(times)[len(times) // 2], "peak_mib": peak, "loss": loss.item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny.en", help="tiny.en, base, or a checkpoint folder")
    p.add_argument("--random-init", action="store_true",
                   help="random weights of size --model (no download; time and memory do not depend on them)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--tokens", type=int, default=32, help="decoder tokens per example")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (lazy initialisation, autotuning)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", choices=list(DTYPES), default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--one", choices=["ours", "transformers"], help=argparse.SUPPRESS)
    p.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--grad-checkpointing", choices=["both", "off", "on"], default="both",
                   help="the rows to run: without gradient checkpointing, with it, or both (default)")
    args = p.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args)))
        return
    rows = []
    for checkpointing in {"both": (False, True), "off": (False,), "on": (True,)}[args.grad_checkpointing]:
        for system in ("ours", "transformers"):
            cmd = [sys.executable, __file__, "--one", system, *sys.argv[1:]] + (["--checkpointing"] if checkpointing else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            rows.append({**json.loads(out), "checkpointing": checkpointing})
            print(f"  {rows[-1]}", file=sys.stderr)
    weights = "random weights" if args.random_init else "real weights"
    print(f"\n{args.model} ({weights}), batch {args.batch} x {args.tokens} tokens, {args.precision}, "
          f"{args.device}, {args.threads} threads, median of {args.steps} steps\n")
    print("| grad. checkpointing | system | step time (s) | peak memory (MiB) | ours / theirs: time | memory |")
    print("| --- | --- | --- | --- | --- | --- |")
    for ours, theirs in zip(rows[::2], rows[1::2]):
        for r in (ours, theirs):
            ratio = (f"{ours['step_s'] / theirs['step_s']:.2f} | {ours['peak_mib'] / theirs['peak_mib']:.2f}"
                     if r is ours else " | ")
            print(f"| {'on' if r['checkpointing'] else 'off'} | {r['system']} | {r['step_s']:.2f} | "
                  f"{r['peak_mib']:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
