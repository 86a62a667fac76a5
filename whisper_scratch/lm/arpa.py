"""The ARPA back-off format, written and read (gzip-compressed when the name ends in .gz, or
whenever the file starts like gzip): the standard exchange format of n-gram models, so that a
model KenLM or SRILM built elsewhere from a large corpus loads here too.

    \\data\\
    ngram 1=N1
    ...
    \\1-grams:
    log10_prob <TAB> w1 [<TAB> log10_backoff]
    ...
    \\end\\
"""
from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

from ..common.files import atomic_open
from .kneser_ney import NgramModel

_GZIP_MAGIC = b"\x1f\x8b"


class ArpaError(ValueError):
    """A file that is not a readable ARPA model; the message names the file (and the line)."""


def _number(value: float) -> str:
    return f"{value:.7g}"


def write_arpa(model: NgramModel, path: str | Path) -> Path:
    """Write `model` to `path` atomically, n-grams sorted so that a model always gives the same
    bytes (gzip without a time stamp when the name ends in .gz)."""
    path = Path(path)
    with atomic_open(path) as raw:
        stream = gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) if path.suffix == ".gz" else raw
        out = io.TextIOWrapper(stream, encoding="utf-8", newline="\n")
        out.write("\\data\\\n")
        for n, count in enumerate(model.counts(), 1):
            out.write(f"ngram {n}={count}\n")
        for n in range(1, model.order + 1):
            out.write(f"\n\\{n}-grams:\n")
            probs, backoffs = model.probs[n - 1], model.backoffs[n - 1]
            for gram in sorted(probs):
                backoff = backoffs.get(gram)
                tail = f"\t{_number(backoff)}" if backoff is not None else ""
                out.write(f"{_number(probs[gram])}\t{' '.join(gram)}{tail}\n")
        out.write("\n\\end\\\n")
        out.flush()
        out.detach()
        if stream is not raw:
            stream.close()
    return path


def read_arpa(path: str | Path) -> NgramModel:
    """The model in an ARPA file; ArpaError naming the file (and the line) when it is missing,
    empty, truncated or not an ARPA model."""
    path = Path(path)
    if not path.is_file():
        raise ArpaError(f"language model not found: {path}")
    try:
        with open(path, "rb") as f:
            compressed = f.read(2) == _GZIP_MAGIC
        binary = gzip.open(path, "rb") if compressed else open(path, "rb")
        with io.TextIOWrapper(binary, encoding="utf-8") as lines:
            return _parse(path, lines)
    except UnicodeDecodeError:
        raise ArpaError(f"{path}: not text (an ARPA language model is UTF-8 text, gzipped or not; "
                        "a KenLM binary model is not read here: convert it back to ARPA)") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ArpaError(f"{path}: a damaged gzip file ({e}); build or copy it again") from None
    except OSError as e:
        raise ArpaError(f"cannot read {path}: {e.strerror or e}") from None


def _parse(path: Path, lines: io.TextIOWrapper) -> NgramModel:
    declared: list[int] = []
    model: NgramModel | None = None
    section = 0
    number = 0
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if model is None:  # the header: \data\ and the counts
            if line == "\\data\\" and not declared:
                continue
            if line.startswith("ngram ") and "=" in line:
                n, _, count = line[6:].partition("=")
                if not (n.strip().isdigit() and count.strip().isdigit()) or int(n) != len(declared) + 1:
                    raise ArpaError(f"{path}:{number}: expected 'ngram {len(declared) + 1}=COUNT', got {line[:60]!r}")
                declared.append(int(count))
                continue
            if line == "\\1-grams:" and declared:
                model = NgramModel(len(declared), [{} for _ in declared], [{} for _ in declared])
                section = 1
                continue
            raise ArpaError(f"{path}:{number}: not an ARPA language model (expected \\data\\, 'ngram N=COUNT' "
                            f"or \\1-grams:, got {line[:60]!r})")
        if line.startswith("\\"):
            if line == "\\end\\":
                break
            if line == f"\\{section + 1}-grams:" and section < model.order:
                section += 1
                continue
            raise ArpaError(f"{path}:{number}: unexpected section {line[:60]!r} after the {section}-grams")
        fields = line.split()
        if len(fields) not in (section + 1, section + 2):
            raise ArpaError(f"{path}:{number}: a {section}-gram line needs a log10 probability, {section} "
                            f"word{'s' * (section > 1)} and maybe a back-off weight, got {line[:60]!r}")
        gram = tuple(fields[1:section + 1])
        try:
            model.probs[section - 1][gram] = float(fields[0])
            if len(fields) == section + 2:
                model.backoffs[section - 1][gram] = float(fields[-1])
        except ValueError:
            raise ArpaError(f"{path}:{number}: not a number in {line[:60]!r}") from None
    else:
        if model is None:
            what = "an empty file" if number == 0 else "no n-grams in it"
            raise ArpaError(f"{path}: not an ARPA language model ({what})")
        raise ArpaError(f"{path}: ends without \\end\\ after line {number} (a truncated file?)")
    found = model.counts()
    if found != declared:
        raise ArpaError(f"{path}: the header declares {declared} n-grams of each order, the file holds {found} "
                        "(a damaged file?)")
    if not model.probs[0]:
        raise ArpaError(f"{path}: no unigrams in it")
    return model
