"""Build tests/data/asterisk-demo (the embedded default of run.sh) from ../shared/data/asterisk-en:
a seeded draw of distinct prompts, at most 6 s each, into a training and a held-out split with no
transcript in both. Run once; the result is committed with its licence in tests/data/LICENSES.md.

  python scripts/make_demo_data.py [--train 150 --test 50 --seed 0]
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=Path, default=REPO.parent / "shared/data/asterisk-en")
    p.add_argument("--out", type=Path, default=REPO / "tests/data/asterisk-demo")
    p.add_argument("--train", type=int, default=150)
    p.add_argument("--test", type=int, default=50)
    p.add_argument("--max-duration", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
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


if __name__ == "__main__":
    main()
