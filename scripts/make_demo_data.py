"""Build the data of run.sh's embedded demos, once; the result is committed with its licence in
tests/data/LICENSES.md.

  python scripts/make_demo_data.py czech [--train 384 --held-out 32 --seed 0]
      tests/data/cs-demo (the default demo), from ../shared/data/fillets-cv/cs: a seeded draw of the
      Common Voice-style train split and of the dev split (other game levels), in the same layout
  python scripts/make_demo_data.py english [--train 150 --test 50 --seed 0]
      tests/data/asterisk-demo (DEMO=english), from ../shared/data/asterisk-en: distinct prompts,
      at most 6 s each, in a training and a held-out split with no transcript in both
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


def czech(args: argparse.Namespace) -> None:
    """A seeded draw of train.tsv and of dev.tsv, written as train.tsv and dev.tsv beside clips/."""
    shutil.rmtree(args.out, ignore_errors=True)
    (args.out / "clips").mkdir(parents=True)
    counts = {}
    for split, n in (("train", args.train), ("dev", args.held_out)):
        header, *rows = (args.source / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        path = header.split("\t").index("path")
        # Clips that fit the encoder's window: a longer one would be skipped by training.
        rows = [r for r in rows if sf.info(args.source / "clips" / r.split("\t")[path]).duration <= args.max_duration]
        chosen = sorted(random.Random(args.seed).sample(rows, n), key=lambda r: r.split("\t")[path])
        for row in chosen:
            name = row.split("\t")[path]
            shutil.copyfile(args.source / "clips" / name, args.out / "clips" / name)
        (args.out / f"{split}.tsv").write_text("\n".join([header, *chosen]) + "\n", encoding="utf-8")
        counts[split] = len(chosen)
    print(f"{args.out}: " + ", ".join(f"{k} {v} clips" for k, v in counts.items()))


def english(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in (args.source / "manifest.jsonl").read_text().splitlines()]
    by_text: dict[str, dict] = {}
    for row in rows:  # one clip per transcript: a prompt recorded twice must not sit in both splits
        if row["duration"] <= args.max_duration:
            by_text.setdefault(row["text"].strip().lower(), row)
    picked = sorted(by_text.values(), key=lambda r: r["audio"])
    random.Random(args.seed).shuffle(picked)
    splits = {"train": picked[:args.train], "test": picked[args.train:args.train + args.test]}
    shutil.rmtree(args.out, ignore_errors=True)
    for split, chosen in splits.items():
        (args.out / split).mkdir(parents=True)
        lines = []
        for row in sorted(chosen, key=lambda r: r["audio"]):
            name = Path(row["audio"]).name
            shutil.copyfile(args.source / row["audio"], args.out / split / name)
            lines.append(json.dumps({"audio": f"{split}/{name}", "text": row["text"], "language": "en"}))
        (args.out / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    print(f"{args.out}: " + ", ".join(f"{k} {len(v)} clips" for k, v in splits.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="kind", required=True)
    cs = kinds.add_parser("czech")
    cs.add_argument("--source", type=Path, default=REPO.parent / "shared/data/fillets-cv/cs")
    cs.add_argument("--out", type=Path, default=REPO / "tests/data/cs-demo")
    cs.add_argument("--train", type=int, default=384)
    cs.add_argument("--held-out", type=int, default=32)
    cs.add_argument("--max-duration", type=float, default=30.0)
    cs.add_argument("--seed", type=int, default=0)
    en = kinds.add_parser("english")
    en.add_argument("--source", type=Path, default=REPO.parent / "shared/data/asterisk-en")
    en.add_argument("--out", type=Path, default=REPO / "tests/data/asterisk-demo")
    en.add_argument("--train", type=int, default=150)
    en.add_argument("--test", type=int, default=50)
    en.add_argument("--max-duration", type=float, default=6.0)
    en.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    {"czech": czech, "english": english}[args.kind](args)


if __name__ == "__main__":
    main()
