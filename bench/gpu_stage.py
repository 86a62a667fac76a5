"""`bench/gpu_check.sh --prepare DIR`: stage here what the GPU check needs on a machine without
network beyond its own Python 3.12, CUDA torch, transformers, numpy, scipy, sentencepiece, tiktoken,
safetensors and tqdm:

  DIR/wheels/  the missing packages as Python 3.12 manylinux wheels (pip download with platform
               flags, dependencies resolved for that target, those the machine has left out)
  DIR/cs/      a Common Voice-style Czech subset: 64 train and 32 dev clips of fillets-cv/cs

DIR must be an ignored folder of the checkout so that it travels with it (`carry`); the whole
stage stays under 48 MiB (exit code 1 when it does not).

  python bench/gpu_stage.py gpu_stage [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What the check imports beyond the GPU machine's own packages.
PACKAGES = ("soundfile", "soxr", "jiwer", "matplotlib")
# Its own packages, which pip would otherwise stage again as dependencies.
PRESENT = ("numpy", "packaging", "scipy", "torch", "tqdm", "pyyaml", "filelock", "typing_extensions",
           "typing-extensions", "sympy", "networkx", "jinja2", "fsspec", "markupsafe", "mpmath", "setuptools")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
LIMIT_MIB = 48
SPLITS = {"train": 64, "dev": 32}


def download_wheels(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "--abi", "cp312", "--dest", str(folder), *PACKAGES]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd, check=True)
    for wheel in folder.glob("*.whl"):
        name = wheel.name.split("-")[0].lower()
        if name in PRESENT or name.replace("_", "-") in PRESENT:
            wheel.unlink()


def stage_data(data: Path, folder: Path) -> None:
    """The first clips of each split, in the Common Voice layout train.py reads."""
    source = data / "fillets-cv" / "cs"
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    for split, count in SPLITS.items():
        with open(source / f"{split}.tsv", encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            rows = [row for _, row in zip(range(count), reader)]
            fields = reader.fieldnames
        with open(folder / f"{split}.tsv", "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fields, delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        for row in rows:
            shutil.copy(source / "clips" / row["path"], folder / "clips" / row["path"])


def size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", type=Path)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--no-wheels", action="store_true", help="data only (no package index needed)")
    args = p.parse_args(argv)
    if args.stage.exists():
        shutil.rmtree(args.stage)
    if not args.no_wheels:
        download_wheels(args.stage / "wheels")
    stage_data(args.data, args.stage / "cs")
    total = size_mib(args.stage)
    for part in sorted(args.stage.iterdir()):
        print(f"{part}: {size_mib(part):.1f} MiB")
    wheels = sorted(w.name for w in (args.stage / "wheels").glob("*.whl")) if not args.no_wheels else []
    print(f"{len(wheels)} wheels: {', '.join(wheels)}")
    print(f"{args.stage}: {total:.1f} MiB in all (limit {LIMIT_MIB} MiB)")
    return 0 if total < LIMIT_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
