"""GPU memory of a training preset (`configs/*.args`) with a model of a given size, on a class of
card (`--card`, whisper_scratch.training.memory.CARDS), known before a GPU is at hand.

  python bench/preset_memory.py --preset configs/6gb.args --size base --card 6gb     # estimate, no GPU
  python bench/preset_memory.py --preset configs/6gb.args --size base --largest-batch
  python bench/preset_memory.py --preset configs/6gb.args --size base --device cuda  # measure as well
  python bench/preset_memory.py --table                                              # docs/gpu.md

The estimate traces the preset's worst-case training step and evaluation with fake tensors (see
whisper_scratch/training/memory.py): weights, gradients, AdamW states, activations, the card's
precision and attention path, a simulated caching allocator and the CUDA context. Its last line
ends in `peak N.NN GiB`; exit code 1 when that is over the card's capacity.

`--device cuda` then runs the real training loop on worst-case clips written for the purpose
(random weights; clips of --max-duration seconds, transcripts of --max-label-tokens tokens): the
allocator capped (`--limit-gib`) at the card's capacity less the measured CUDA context, and
`--sdpa math` on a capability-7.5 class. It prints torch.cuda.max_memory_reserved plus the
context beside the estimate; exit code 1 when it runs out of memory or is over the capacity.
On a CPU (`--device cpu`) the loop runs the same way, and the peak is measured on a GPU only.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from whisper_scratch.audio.geometry import SAMPLE_RATE  # noqa: E402
from whisper_scratch.cli import train  # noqa: E402
from whisper_scratch.model.checkpoint import save_model  # noqa: E402
from whisper_scratch.model.loaded import whisper_vocabulary  # noqa: E402
from whisper_scratch.model.whisper import SIZES, Whisper  # noqa: E402
from whisper_scratch.training.config import TrainConfig  # noqa: E402
from whisper_scratch.training.loop import Trainer  # noqa: E402
from whisper_scratch.training.memory import CARDS, CardClass, GiB, MemoryEstimate, Workload, estimate  # noqa: E402

TABLE_PRESETS = ("configs/6gb.args", "configs/6gb_lowmem.args", "configs/run.args")
TABLE_SIZES = ("tiny", "base", "small", "medium", "large-v3", "turbo")
BATCH_LIMIT = 1024  # --largest-batch searches no further
TABLE_BEGIN = "<!-- preset_memory table: begin (bench/preset_memory.py --table; edits here are overwritten) -->"
TABLE_END = "<!-- preset_memory table: end -->"


def preset_config(preset: Path, extra: list[str] = ()) -> TrainConfig:
    """The TrainConfig `train.py @preset` builds; the data and init flags only satisfy the parser."""
    return train.config_from_args(train.parse_args([f"@{preset}", "--language", "cs", *extra]))


def largest_batch(peak: Callable[[int], int], capacity: int, start: int, limit: int = BATCH_LIMIT) -> int:
    """The largest batch up to `limit` whose `peak(batch)` is at most `capacity`, 0 when one clip
    does not fit. The peak grows with the batch, close to linearly: each guess lies on the line
    through batch 1 (or the smallest batch known not to fit) and the largest that fits, and a guess
    is checked on its other side too, so a search takes a few traces."""
    known: dict[int, int] = {}

    def fits(b: int) -> bool:
        if b not in known:
            known[b] = peak(b)
        return known[b] <= capacity

    if not fits(1):
        return 0
    lo, hi = 1, limit + 1  # lo fits; hi does not (limit + 1: not traced, past the search)
    guess = min(max(start, 2), limit)
    while hi - lo > 1:
        if fits(guess):
            lo = guess
            if guess + 1 < hi:
                lo, hi = (guess + 1, hi) if fits(guess + 1) else (lo, guess + 1)
        else:
            hi = guess
            if guess - 1 > lo:
                lo, hi = (guess - 1, hi) if fits(guess - 1) else (lo, guess - 1)
        if hi - lo <= 1:
            break
        # The slope over the widest traced span: neighbours' peaks differ by allocator rounding, which
        # can even make a step down.
        other = hi if hi in known else min(known)
        slope = (known[other] - known[lo]) / (other - lo) if other != lo else 0
        step = int((capacity - known[lo]) / slope) if slope > 0 else 2 * lo
        guess = min(max(lo + step, lo + 1), hi - 1)
    return lo


def describe_run(preset: Path, size: str, est: MemoryEstimate) -> str:
    w = est.workload
    return (f"{preset.name} with {size} (random weights) on a {est.card.describe()}: batch {w.batch} x "
            f"{w.grad_accum} micro-batches of {w.content_frames / 100:g} s clips and {w.label_tokens} tokens, "
            f"eval batch {w.eval_batch}")


def print_breakdown(est: MemoryEstimate) -> None:
    rows = [*est.breakdown.items(), ("= allocated peak", est.peak_allocated)]
    for name, nbytes in rows:
        where = f"  ({est.peak_phase}; evaluation {est.phase_peaks.get('evaluation', 0) / GiB:.2f} GiB)" \
            if name.startswith("=") else ""
        print(f"  {name:<30}{nbytes / GiB:6.2f} GiB{where}")
    print(f"  {'allocator reserve':<30}{(est.peak_reserved - est.peak_allocated) / GiB:6.2f} GiB  "
          "(simulated caching allocator on a card just large enough)")
    print(f"  {'CUDA context':<30}{est.context / GiB:6.2f} GiB")


def verdict(preset: Path, size: str, est: MemoryEstimate, batch_note: str = "") -> str:
    fits = "fits" if est.fits else "does NOT fit"
    return (f"{preset.name} with {size} on a {est.card.name} card, batch {est.workload.batch}{batch_note}: "
            f"{fits} its {est.card.capacity_gib:g} GiB, peak {est.total / GiB:.2f} GiB")


def run_estimate(args: argparse.Namespace, cfg: TrainConfig, card: CardClass) -> int:
    dims = SIZES[args.size]
    started = time.time()
    est = estimate(cfg, dims, card, batch=args.batch)
    if args.largest_batch:
        cache = {est.workload.batch: est}

        def peak(b: int) -> int:
            if b not in cache:
                cache[b] = estimate(cfg, dims, card, batch=b)
            return cache[b].total

        best = largest_batch(peak, int(card.capacity_gib * GiB), est.workload.batch)
        print(f"largest batch that fits the {card.name} card's {card.capacity_gib:g} GiB: {best}"
              + (f" (batch {best + 1}: {peak(best + 1) / GiB:.2f} GiB)" if 0 < best < BATCH_LIMIT else ""))
        if best == 0:
            print(verdict(args.preset, args.size, est, " (even batch 1 does not fit)"))
            return 1
        est = cache[best]
    print(describe_run(args.preset, args.size, est))
    print_breakdown(est)
    print(f"  (traced in {time.time() - started:.1f} s)")
    print(verdict(args.preset, args.size, est))
    return 0 if est.fits else 1


def transcript(tokenizer, n_tokens: int) -> str:
    """A transcript of exactly `n_tokens` BPE tokens."""
    words = n_tokens
    while len(tokenizer.encode(" " + " ".join(["ano"] * words))) > n_tokens:
        words -= 1
    text = " ".join(["ano"] * words)
    while len(tokenizer.encode(" " + text)) < n_tokens:
        text += "."
    return text


def write_worst_case_clips(folder: Path, cfg: TrainConfig, work: Workload, tokenizer, train_clips: int) -> None:
    """train.jsonl and eval.jsonl over clips as long as the preset lets through (noise, so every
    frame counts) with transcripts as long as it lets through (the decoder input is the start
    sequence, a timestamp, the text and the end timestamp)."""
    seconds = work.content_frames / 100
    prefix = len(tokenizer.start_sequence("cs", "transcribe"))
    text = transcript(tokenizer, work.label_tokens - prefix - 1 - (cfg.data.timestamp_share > 0))
    rng = np.random.default_rng(0)
    for split, count in (("train", train_clips), ("eval", work.eval_batch)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for i in range(count):
                name = f"{split}{i}.wav"
                sf.write(folder / name, 0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32),
                         SAMPLE_RATE)
                f.write(json.dumps({"audio": name, "text": text}) + "\n")


def run_measured(args: argparse.Namespace, cfg: TrainConfig, card: CardClass) -> int:
    est = estimate(cfg, SIZES[args.size], card, batch=args.batch)
    print(describe_run(args.preset, args.size, est))
    print_breakdown(est)
    cuda = args.device.startswith("cuda")
    work = est.workload
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = Whisper(SIZES[args.size])
        save_model(model, tmp / "init.pt")
        write_worst_case_clips(tmp, cfg, work, whisper_vocabulary(model), work.batch * work.grad_accum * args.steps)
        del model
        flags = [f"@{args.preset}", "--init", str(tmp / "init.pt"), "--train-manifest", str(tmp / "train.jsonl"),
                 "--eval-manifest", str(tmp / "eval.jsonl"), "--language", "cs", "--output-dir", str(tmp / "run"),
                 "--max-steps", str(args.steps), "--no-eval-before", "--eval-every", str(10**9),
                 "--save-every", str(10**9), "--train-batch-size", str(work.batch), "--device", args.device,
                 "--max-eval-utterances", str(args.eval_utterances or work.eval_batch)]
        context, limit = 0.0, None
        if cuda:
            device = torch.device(args.device)
            torch.cuda.init()
            torch.zeros(1, device=device) @ torch.zeros(1, device=device)  # the context and cuBLAS, as a run has them
            free, total = torch.cuda.mem_get_info(device)
            context = (total - free - torch.cuda.memory_reserved(device)) / GiB
            limit = args.limit_gib or card.capacity_gib - context
            precision = args.precision or ("fp16" if card.dtype == torch.float16 else "bf16")
            flags += ["--limit-gib", f"{limit:.3f}", "--precision", precision]
            flags += ["--sdpa", "math"] if card.math_attention else []
        elif args.precision:
            flags += ["--precision", args.precision]
        try:
            with redirect_stdout(sys.stderr):  # the loop's progress lines; stdout is for the verdict
                Trainer(train.config_from_args(train.parse_args(flags))).run()
        except torch.OutOfMemoryError as e:
            print(f"OVER: out of memory under the {limit:.2f} GiB cap ({str(e).splitlines()[0]})")
            return 1
    what = f"{args.preset.name} with {args.size}, batch {work.batch}, {args.steps} steps and the evaluation"
    if not cuda:
        print(f"{what} ran on {args.device}; memory is measured on a GPU only: estimated peak {est.total / GiB:.2f} GiB")
        return 0
    measured = torch.cuda.max_memory_reserved(device) / GiB + context
    over = measured > card.capacity_gib
    print(f"  measured on {torch.cuda.get_device_name(device)}: reserved {measured - context:.2f} GiB + context "
          f"{context:.2f} GiB (allocator capped at {limit:.2f} GiB); estimate {est.total / GiB:.2f} GiB")
    print(f"{what} on a {card.name} card: {'OVER' if over else 'within'} its {card.capacity_gib:g} GiB, "
          f"measured peak {measured:.2f} GiB")
    return 1 if over else 0


def table_cell(preset: str, size: str, card_names: tuple[str, ...]) -> dict[str, tuple[float, bool, int]]:
    """{card: (peak GiB at the preset's batch, fits, largest batch)} for cards of one attention path,
    which share their traces."""
    cfg = preset_config(Path(preset))
    dims = SIZES[size]
    card = CARDS[card_names[0]]  # same precision and attention path as the others
    traced: dict[int, int] = {}

    def peak(b: int) -> int:
        if b not in traced:
            traced[b] = estimate(cfg, dims, card, batch=b).total
        return traced[b]

    out = {}
    for name in card_names:
        capacity = int(CARDS[name].capacity_gib * GiB)
        best = largest_batch(peak, capacity, cfg.train_batch_size)
        at_preset = peak(cfg.train_batch_size)
        out[name] = (at_preset / GiB, at_preset <= capacity, best)
    return out


def make_table(jobs: int) -> str:
    paths = (tuple(n for n, c in CARDS.items() if c.math_attention), tuple(n for n, c in CARDS.items() if not c.math_attention))
    tasks = [(p, s, cards) for p in TABLE_PRESETS for s in TABLE_SIZES for cards in paths]
    with ProcessPoolExecutor(jobs) as pool:
        results = list(pool.map(table_cell, *zip(*tasks)))
    cells: dict[tuple[str, str], dict] = {}
    for (p, s, _), result in zip(tasks, results):
        cells.setdefault((p, s), {}).update(result)
    lines = []
    for p in TABLE_PRESETS:
        cfg = preset_config(Path(p))
        work = Workload.of(cfg, SIZES["base"])
        lines += [f"`{p}`: batch {cfg.train_batch_size} x {cfg.grad_accum}, eval batch {cfg.eval_batch_size}, "
                  f"clips up to {cfg.data.max_duration:g} s{' trimmed' if cfg.trim_padding else ''}, "
                  f"{work.label_tokens} label tokens{', gradient checkpointing' if cfg.grad_checkpointing else ''}",
                  "", "| size | " + " | ".join(f"{n} ({CARDS[n].capacity_gib:g} GiB)" for n in CARDS) + " |",
                  "|---" * (len(CARDS) + 1) + "|"]
        for s in TABLE_SIZES:
            row = []
            for n in CARDS:
                gib, fits, best = cells[(p, s)][n]
                most = f"≥{best}" if best >= BATCH_LIMIT else str(best)
                row.append(f"{gib:.2f} {'fits' if fits else '**no**'}, max {most}")
            lines.append(f"| {s} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_table(doc: Path, jobs: int) -> None:
    started = time.time()
    table = make_table(jobs)
    text = doc.read_text(encoding="utf-8")
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise SystemExit(f"{doc}: no table markers ({TABLE_BEGIN!r} ... {TABLE_END!r}) to write between")
    head, rest = text.split(TABLE_BEGIN)
    doc.write_text(f"{head}{TABLE_BEGIN}\n{table}{TABLE_END}{rest.split(TABLE_END, 1)[1]}", encoding="utf-8")
    print(f"wrote the table of {doc} in {time.time() - started:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", type=Path, default=REPO / "configs/6gb_lowmem.args")
    p.add_argument("--size", default="small", choices=sorted(SIZES), help="model size (random weights)")
    p.add_argument("--card", default="6gb", choices=list(CARDS), help="class of card (default 6gb)")
    p.add_argument("--batch", type=int, help="train batch size instead of the preset's")
    p.add_argument("--largest-batch", action="store_true", help="find the largest train batch that fits the card")
    p.add_argument("--estimate", action="store_true", help="estimate only, no GPU needed (the default)")
    p.add_argument("--device", help="also run the real training loop here (cuda, cuda:N, or cpu for a dry run)")
    p.add_argument("--steps", type=int, default=2, help="--device: optimizer steps (default 2)")
    p.add_argument("--eval-utterances", type=int, help="--device: eval clips (default: one eval batch)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"],
                   help="--device: instead of the card's (fp16 on 7.5, bf16 from 8.0)")
    p.add_argument("--limit-gib", type=float,
                   help="--device cuda: the allocator's cap (default: the card's capacity less the CUDA context)")
    p.add_argument("--table", action="store_true", help="write the table of docs/gpu.md (every preset, size, card)")
    p.add_argument("--doc", type=Path, default=REPO / "docs/gpu.md", help="--table: the file to write it into")
    p.add_argument("--jobs", type=int, default=2, help="--table: processes tracing at once")
    args = p.parse_args(argv)
    if args.table:
        write_table(args.doc, args.jobs)
        return 0
    if not args.preset.is_file():
        p.error(f"{args.preset}: preset file not found (one of configs/*.args)")
    cfg = preset_config(args.preset)
    card = CARDS[args.card]
    if args.device and args.largest_batch:
        p.error("--largest-batch is an estimate: leave out --device")
    return run_measured(args, cfg, card) if args.device else run_estimate(args, cfg, card)


if __name__ == "__main__":
    sys.exit(main())
