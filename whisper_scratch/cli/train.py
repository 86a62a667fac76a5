"""Fine-tune a pretrained Whisper or train one from scratch.

  python train.py --local-data-dir cv-corpus-17.0/cs --init base --language cs
  python train.py --train-manifest train.jsonl --eval-manifest dev.jsonl --whisper-size tiny --vocab-size 2000
  python train.py --dataset my_saved_dataset --eval-split validation --init base --language mn
  torchrun --nproc_per_node 4 train.py …        (DDP: one process per GPU)

Flags may also come from a preset file: `python train.py @configs/demo.args` (one flag per line).
"""
from __future__ import annotations

import argparse
import sys
import zipfile
from dataclasses import fields
from pathlib import Path

from ..common.device import DeviceError
from ..common.files import unwritable
from ..common.precision import DTYPES
from ..data.splits import DataConfig, DataError
from ..evaluation.metrics import SCORINGS
from ..evaluation.noisy import parse_snrs
from ..model.whisper import SIZES
from ..training.augment import AugmentConfig
from ..training.config import TrainConfig
from ..training.loop import Trainer
from ..training.state import STATE_FILE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                fromfile_prefix_chars="@")
    d = p.add_argument_group("data")
    d.add_argument("--local-data-dir", type=Path, help="Common Voice language folder (train.tsv, dev.tsv, clips/)")
    d.add_argument("--train-split", default="train",
                   help="split for training: a Common Voice .tsv name (train, validated, …) or a --dataset split")
    d.add_argument("--eval-split", default="dev",
                   help="split for evaluation: a Common Voice .tsv name (dev, test, …) or a --dataset split")
    d.add_argument("--train-manifest", type=Path, help="JSONL/CSV manifest or a folder of audio + .txt")
    d.add_argument("--eval-manifest", type=Path, help="JSONL/CSV manifest or a folder of audio + .txt")
    d.add_argument("--dataset", help="Hugging Face dataset: a save_to_disk folder, a folder of parquet/arrow "
                                     "shards or an audiofolder, or a Hub name; --train-split and --eval-split "
                                     "name its splits (e.g. --eval-split validation)")
    d.add_argument("--dataset-config", help="the dataset's Hub configuration (e.g. a Common Voice language)")
    d.add_argument("--audio-column", default="audio", help="--dataset: the audio column (default audio)")
    d.add_argument("--text-column", help="--dataset: the transcript column (default: text, sentence, "
                                         "transcription or transcript, whichever it has)")
    d.add_argument("--language", help="language code of the data (sets the <|lang|> token)")
    d.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    d.add_argument("--keep-chars", help="allowed characters; transcripts are normalised to this set")
    d.add_argument("--min-duration", type=float, default=0.0)
    d.add_argument("--max-duration", type=float, default=30.0, help="longer clips are skipped and counted")
    d.add_argument("--max-label-tokens", type=int,
                   help="skip (and count) transcripts of more label tokens (default: the decoder context, 448); "
                        "bounds the logits' memory on a small card")
    d.add_argument("--timestamp-share", type=float, default=0.5,
                   help="share of labels written with timestamps, as Whisper was trained (keeps timestamps alive)")
    a = p.add_argument_group("augmentation")
    a.add_argument("--spec-augment", action="store_true", help="SpecAugment time and frequency masks")
    a.add_argument("--noise", action="store_true", help="mix noise into training audio")
    a.add_argument("--noise-dir", type=Path, help="folder of noise recordings (else white/pink noise)")
    a.add_argument("--snr-range", type=float, nargs=2, default=(5.0, 20.0), metavar=("LOW", "HIGH"))
    m = p.add_argument_group("model")
    m.add_argument("--init", help="checkpoint to fine-tune: size name, .pt, Hugging Face or CTranslate2 folder")
    m.add_argument("--whisper-size", choices=sorted(SIZES), help="train from random weights with this size")
    m.add_argument("--audio-ctx", type=int, help="from scratch: encoder positions (1500 = 30 s windows)")
    m.add_argument("--text-ctx", type=int, help="from scratch: decoder context")
    m.add_argument("--width", type=int, help="from scratch: override the size's width")
    m.add_argument("--heads", type=int, help="from scratch: override the size's head count")
    m.add_argument("--layers", type=int, help="from scratch: override the size's layer count")
    m.add_argument("--vocab-size", type=int, default=1000, help="from scratch: SentencePiece pieces")
    m.add_argument("--tokenizer-dir", type=Path, help="from scratch: reuse a trained SentencePiece vocabulary")
    m.add_argument("--dual-attention", action="store_true", help="add the gated noise cross-attention")
    m.add_argument("--freeze-encoder", action="store_true")
    m.add_argument("--freeze-decoder", action="store_true", help="freeze all the decoder but the noise branch")
    m.add_argument("--freeze-embeddings", action="store_true")
    m.add_argument("--lora-rank", type=int, default=0, help="train LoRA adapters of this rank (merged on save)")
    m.add_argument("--lora-alpha", type=float)
    o = p.add_argument_group("optimisation")
    o.add_argument("--train-batch-size", type=int, default=16)
    o.add_argument("--eval-batch-size", type=int, default=16)
    o.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    o.add_argument("--num-epochs", type=int, default=3)
    o.add_argument("--max-steps", type=int, help="optimizer steps (overrides --num-epochs)")
    o.add_argument("--learning-rate", type=float, default=1e-5)
    o.add_argument("--weight-decay", type=float, default=0.01)
    o.add_argument("--warmup-steps", type=int, default=50)
    o.add_argument("--schedule", choices=["linear", "cosine", "constant"], default="linear")
    o.add_argument("--max-grad-norm", type=float, default=1.0)
    o.add_argument("--precision", choices=["auto", *DTYPES], default="auto")
    o.add_argument("--grad-checkpointing", action="store_true", help="recompute activations to save memory")
    o.add_argument("--optimizer", choices=["adamw", "adamw8bit"], default="adamw")
    o.add_argument("--group-by-length", action="store_true", help="batch labels of similar length together")
    o.add_argument("--cache-encoder", action="store_true",
                   help="with --freeze-encoder: encode each clip once and train on the stored encoder outputs")
    o.add_argument("--cache-variants", type=int, default=1,
                   help="augmented versions of each clip to encode (epoch e uses version e %% N)")
    o.add_argument("--cache-storage", choices=["fp32", "fp16"], default="fp32")
    o.add_argument("--trim-padding", action="store_true",
                   help="encode only each batch's clip frames plus 2 s; the rest of the 30 s window from a window "
                        "of padding (several times less encoder work on short clips; a trainable encoder on a CPU)")
    r = p.add_argument_group("run")
    r.add_argument("--output-dir", type=Path, default=Path("runs/whisper"))
    r.add_argument("--eval-every", type=int, default=200)
    r.add_argument("--save-every", type=int, default=200)
    r.add_argument("--log-every", type=int, default=10)
    r.add_argument("--no-eval-before", action="store_true", help="skip the evaluation before training")
    r.add_argument("--max-eval-utterances", type=int)
    r.add_argument("--scoring", choices=SCORINGS, default="standard",
                   help="WER/CER: standard (openai-whisper's normaliser, plain jiwer) or lenient (ours, "
                        "compounds joined; not comparable with published figures)")
    r.add_argument("--eval-noise-dir", type=Path,
                   help="also evaluate with noise from this folder mixed in (same segment per clip every time)")
    r.add_argument("--eval-snr", type=_snrs, default=(10.0, 0.0), metavar="DB,DB",
                   help="SNRs in dB for --eval-noise-dir, comma-separated (default 10,0)")
    r.add_argument("--eval-lm", type=Path, metavar="LM.arpa",
                   help="evaluate with beam search fused with this n-gram LM (whisper-scratch lm build; docs/lm.md) "
                        "instead of greedily, so best/ is chosen by the WER it will be used with")
    r.add_argument("--eval-lm-alpha", type=float, default=0.5, help="with --eval-lm: lm_alpha (tune it with "
                                                                     "whisper-scratch lm tune; default 0.5)")
    r.add_argument("--eval-lm-beta", type=float, default=1.0, help="with --eval-lm: lm_beta (default 1.0)")
    r.add_argument("--eval-beam-size", type=int, default=5, help="with --eval-lm: beam width (default 5)")
    r.add_argument("--num-workers", type=int, default=2, help="DataLoader workers decoding audio")
    r.add_argument("--seed", type=int, default=1234)
    r.add_argument("--device", default="auto",
                   help="auto (this rank's GPU when CUDA works, else the CPU), cpu, cuda or cuda:N; the GPU presets "
                        "say cuda, and stop with the reason when CUDA cannot be used")
    r.add_argument("--fsdp", action="store_true",
                   help="torchrun: shard weights, gradients and optimizer states over the GPUs (FSDP2) instead of "
                        "a full copy on each (DDP): for the sizes that do not fit one card (docs/gpu.md)")
    r.add_argument("--ddp-timeout", type=float, default=30.0,
                   help="torchrun: minutes a collective may wait for the slowest rank (default 30)")
    r.add_argument("--limit-gib", type=float, help="cap the GPU allocator at this many GiB (a large card "
                                                   "behaves like a small one)")
    r.add_argument("--sdpa", choices=["auto", "math"], default="auto",
                   help="math: attention through full matrices, as cards below capability 8.0 run it")
    r.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last exactly")
    return p.parse_args(argv)


def _snrs(text: str) -> tuple[float, ...]:
    try:
        return parse_snrs(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Flags -> TrainConfig (the flag names are the dataclass field names with dashes)."""
    values = vars(args)

    def pick(cls):
        return {f.name: values[f.name] for f in fields(cls) if f.name in values and values[f.name] is not None}

    return TrainConfig(
        data=DataConfig(**pick(DataConfig)),
        augment=AugmentConfig(**pick(AugmentConfig)),
        eval_before=not args.no_eval_before,
        **{k: v for k, v in pick(TrainConfig).items() if k not in ("data", "augment")})


def run_folder_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with --output-dir, and with the state --resume would read from it, found
    before any data is read."""
    out = args.output_dir
    if problem := unwritable(out, folder=True):
        return f"--output-dir {out}: {problem}"
    state = out / "last" / STATE_FILE
    # torch saves a zip archive: one cut short (a run killed while saving) has lost its directory.
    if args.resume and state.is_file() and not zipfile.is_zipfile(state):
        best = out / "best"
        instead = f"train on from {best} with --init {best} (no --resume), or " if (best / "model.pt").is_file() else ""
        return f"--resume: {state} is damaged (cut short while being saved?); {instead}start again without --resume"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if problem := run_folder_problem(args):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        summary = Trainer(config_from_args(args)).run()
    except (DataError, DeviceError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Training itself stops cleanly on Ctrl-C (saving last/); this is Ctrl-C outside it.
        saved = (args.output_dir / "last" / STATE_FILE).is_file()
        print("interrupted; " + (f"continue with --resume (from {args.output_dir / 'last'})" if saved
                                 else "nothing was saved yet: run the command again"), file=sys.stderr)
        return 130
    return 130 if summary.get("stopped") else 0


if __name__ == "__main__":
    sys.exit(main())
