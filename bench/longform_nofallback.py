"""Ours and openai-whisper on bench/longform_cpu.py's 30-minute recording with temperature
fallback off (greedy only): how far do the two sequential long-form paths agree when no sampling
is involved? Prints and writes (bench/results/longform_nofallback.json) the segment counts, how
many leading segments are identical (text, start, end), both WERs and both CPU times.

  python bench/longform_nofallback.py
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from longform_cpu import _tiny_en_dir, build_recording, openai_reference  # noqa: E402

from whisper_scratch.evaluation.metrics import error_rates  # noqa: E402
from whisper_scratch.inference.decoding import DecodingOptions, FallbackOptions  # noqa: E402
from whisper_scratch.inference.longform import transcribe_long  # noqa: E402
from whisper_scratch.inference.options import TranscribeOptions  # noqa: E402
from whisper_scratch.model.checkpoint import load_model  # noqa: E402


def main() -> int:
    import whisper

    torch.set_num_threads(2)
    audio, reference = build_recording(REPO.parent / "shared/data/asterisk-en/manifest.jsonl", 30)
    model = load_model(_tiny_en_dir()).eval()
    start = time.process_time()
    ours = transcribe_long(model, audio, TranscribeOptions(decoding=DecodingOptions(language="en"),
                                                           fallback=FallbackOptions((0.0,)), progress=False))
    cpu_ours = time.process_time() - start
    with tempfile.TemporaryDirectory() as tmp:
        reference_model = openai_reference(_tiny_en_dir(), Path(tmp))
    start = time.process_time()
    theirs = whisper.transcribe(reference_model, audio, language="en", fp16=False, temperature=0.0, verbose=None)
    cpu_theirs = time.process_time() - start
    a = [(s["start"], s["end"], s["text"].strip()) for s in ours["segments"]]
    b = [(round(s["start"], 3), round(s["end"], 3), s["text"].strip()) for s in theirs["segments"] if s["text"].strip()]
    prefix = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    out = {"minutes": round(len(audio) / 16000 / 60, 1), "segments_ours": len(a), "segments_theirs": len(b),
           "identical_leading_segments": prefix,
           "wer_ours": error_rates([reference], [ours["text"]], "en")["wer"],
           "wer_theirs": error_rates([reference], [theirs["text"]], "en")["wer"],
           "cpu_seconds_ours": cpu_ours, "cpu_seconds_theirs": cpu_theirs}
    print(json.dumps(out, indent=2))
    (REPO / "bench/results/longform_nofallback.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
