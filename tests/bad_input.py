"""The bad-input matrix's fixture: from the shipped clips (tests/data), a folder holding every kind
of bad input users have met beside good clips, a copy of the good clips alone (the clean run's
input), and the listings of both. `build(root)` makes it; tests/test_bad_input.py runs each mode
on it."""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
ASTERISK = REPO / "tests/data/asterisk16"
CV_TINY = REPO / "tests/data/cv_tiny"

# A good clip whose name is not UTF-8 (Latin-1 "café" and a stray byte): it must be transcribed.
ODD_NAME = os.fsdecode(b"caf\xe9-\xff.flac")
REFERENCES = {row["audio"].split("/")[-1]: row["text"]
              for row in map(json.loads, (ASTERISK / "manifest.jsonl").read_text().splitlines())}
LONG_TEXT = " ".join(["this transcript is far longer than the decoder context allows"] * 20)


@dataclass
class Matrix:
    """clips/ holds the good clips and the bad audio, clean/ the same good clips alone."""

    root: Path
    clips: Path
    clean: Path
    good: dict[str, str]  # file name in clips/ and clean/ -> reference text ("" for the row without one)
    bad: dict[str, Path]  # kind -> bad audio in clips/ (links, NaN, broken files); "missing" does not exist
    listing: Path  # JSONL {audio, text}: the good clips but ODD_NAME (JSON is UTF-8 text), then the bad audio
    clean_listing: Path  # the same good rows, in clean/
    listings: dict[str, Path]  # kind -> a listing that cannot be read as it is, or (bom) that must be

    def odd(self, folder: Path) -> Path:
        """The good clip whose name is not UTF-8, in `folder` (clips/ or clean/)."""
        return folder / ODD_NAME


def _good(folder: Path) -> dict[str, str]:
    """The good clips, made from the shipped ones: a plain copy, the one with the odd name, one as
    44.1 kHz stereo 24-bit WAV (odd rate, channels and depth) and one listed without a reference."""
    folder.mkdir(parents=True)
    shutil.copy(ASTERISK / "audio/hello-world.flac", folder / "hello-world.flac")
    shutil.copy(ASTERISK / "audio/conf-full.flac", folder / ODD_NAME)
    audio, sr = sf.read(ASTERISK / "audio/vm-nomore.flac", dtype="float32")
    upsampled = np.interp(np.arange(int(len(audio) * 44100 / sr)) * sr / 44100, np.arange(len(audio)), audio)
    sf.write(folder / "vm-nomore-44k-stereo.wav", np.stack([upsampled, 0.5 * upsampled], axis=1), 44100,
             subtype="PCM_24")
    shutil.copy(ASTERISK / "audio/one-moment-please.flac", folder / "no-reference.flac")
    return {"hello-world.flac": REFERENCES["hello-world.flac"], ODD_NAME: REFERENCES["conf-full.flac"],
            "vm-nomore-44k-stereo.wav": REFERENCES["vm-nomore.flac"], "no-reference.flac": ""}


def _bad(folder: Path) -> dict[str, Path]:
    """One file of each kind that cannot be transcribed."""
    clip, sr = sf.read(ASTERISK / "audio/hello-world.flac", dtype="float32")
    nan, inf = clip.copy(), clip.copy()
    nan[1000:1100] = np.nan
    inf[2000] = np.inf
    sf.write(folder / "nan.wav", nan, sr, subtype="FLOAT")
    sf.write(folder / "inf.wav", inf, sr, subtype="FLOAT")
    flac = (ASTERISK / "audio/tt-weasels.flac").read_bytes()
    (folder / "truncated.flac").write_bytes(flac[:len(flac) // 3])
    (folder / "random.flac").write_bytes(random.Random(0).randbytes(4000))
    (folder / "text.wav").write_text("this is not audio, just text with an audio name\n" * 20)
    (folder / "empty.flac").write_bytes(b"")
    sf.write(folder / "no-samples.wav", np.zeros(0, np.float32), 16000)
    (folder / "loop.flac").symlink_to("loop.flac")
    (folder / "dangling.flac").symlink_to("nowhere.flac")
    kinds = ("nan.wav", "inf.wav", "truncated.flac", "random.flac", "text.wav", "empty.flac", "no-samples.wav",
             "loop.flac", "dangling.flac")
    return {name.split(".")[0]: folder / name for name in kinds} | {"missing": folder / "gone.flac"}


def _listing(path: Path, rows: list[tuple[Path, str]]) -> Path:
    path.write_text("".join(json.dumps({"audio": str(a), "text": t, "language": "en"}) + "\n" for a, t in rows))
    return path


def _listings(root: Path, clips: Path) -> dict[str, Path]:
    """Listings as other tools save them: Latin-1 (a CSV manifest; a Common Voice train.tsv), a CSV
    that starts with a UTF-8 byte-order mark (readable), a Common Voice .tsv without its sentence column."""
    table = f"audio,text\n{clips / 'hello-world.flac'},Hello world.\n{clips / 'no-reference.flac'},Un café.\n"
    latin1 = root / "latin1.csv"
    latin1.write_bytes(table.encode("latin-1"))
    bom = root / "bom.csv"
    bom.write_bytes(table.encode("utf-8-sig"))
    cv = root / "cv"
    shutil.copytree(CV_TINY, cv)
    train = cv / "train.tsv"
    train.write_bytes(train.read_text(encoding="utf-8").encode("latin-1", errors="replace"))
    header, *rows = [line.split("\t") for line in (CV_TINY / "test.tsv").read_text(encoding="utf-8").splitlines()]
    keep = [i for i, column in enumerate(header) if column != "sentence"]
    no_sentence = cv / "no-sentence.tsv"
    no_sentence.write_text("".join("\t".join(row[i] for i in keep) + "\n" for row in [header, *rows]))
    return {"latin1_csv": latin1, "bom_csv": bom, "latin1_train_tsv": train, "no_sentence_tsv": no_sentence}


def build(root: Path) -> Matrix:
    """The matrix under `root` (a fresh folder)."""
    clips, clean = root / "clips", root / "clean"
    good = _good(clips)
    _good(clean)
    bad = _bad(clips)
    listed = [name for name in good if name != ODD_NAME]
    bad_rows = [(path, REFERENCES["hello-world.flac"]) for path in bad.values()]
    return Matrix(root, clips, clean, good, bad,
                  listing=_listing(root / "listing.jsonl", [(clips / n, good[n]) for n in listed] + bad_rows),
                  clean_listing=_listing(root / "clean.jsonl", [(clean / n, good[n]) for n in listed]),
                  listings=_listings(root, clips))


def train_listing(matrix: Matrix) -> Path:
    """Every shipped asterisk clip (SentencePiece needs their text) and the bad audio, plus a good
    clip whose transcript is longer than the decoder context."""
    rows = [(ASTERISK / "audio" / name, text) for name, text in REFERENCES.items()]
    rows += [(path, REFERENCES["hello-world.flac"]) for path in matrix.bad.values()]
    rows.append((matrix.clips / "hello-world.flac", LONG_TEXT))
    return _listing(matrix.root / "train.jsonl", rows)
