"""`--compile`: the one-token decoder step over the whole static cache (`TextDecoder.step`), run
through torch.compile. It must give the eager path's tokens on the parity clips, and compile a
bounded number of graphs however long the recording (counted with dynamo's own counter)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from whisper_scratch.audio.io import load_audio
from whisper_scratch.inference.decoding import DecodingOptions, FallbackOptions
from whisper_scratch.inference.longform import transcribe_long
from whisper_scratch.inference.options import TranscribeOptions
from whisper_scratch.inference.transcriber import transcribe_files
from whisper_scratch.model.checkpoint import load_model
from whisper_scratch.model.whisper import ModelDimensions, Whisper


def _graphs() -> int:
    """Graphs dynamo has compiled in this process so far (torch._dynamo.reset() keeps the count)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("dual_attention", [False, True])
def test_static_step_gives_forward_logits(dual_attention):
    """Uncompiled, the masked step over the whole cache is the incremental forward, position after
    position, beams reordered in between."""
    dims = ModelDimensions(n_mels=80, n_audio_ctx=24, n_audio_state=64, n_audio_head=4, n_audio_layer=2,
                           n_vocab=300, n_text_ctx=32, n_text_state=64, n_text_head=4, n_text_layer=2)
    torch.manual_seed(0)
    model = Whisper(dims, dual_attention=dual_attention).eval()
    for block in model.decoder.blocks:
        if dual_attention:  # a live noise branch, not the exact-at-init zero one
            torch.nn.init.normal_(block.noise_cross_attn.out.weight, std=0.05)
    features = torch.randn(3, 24, 64)
    tokens = torch.randint(0, 300, (3, 9))
    order = torch.tensor([2, 0, 1])
    with torch.no_grad():
        eager, static = (model.decoder.new_cache(3, n, torch.float32, "cpu") for n in (9, dims.n_text_ctx))
        expected = [model.logits(tokens[:, :3], features, eager)[:, -1]]
        model.logits(tokens[:, :3], features, static)
        got = [expected[0]]
        for i in range(3, 9):
            if i == 5:
                eager.reorder(order)
                static.reorder(order)
            expected.append(model.logits(tokens[:, i:i + 1], features, eager)[:, -1])
            got.append(model.decoder.step(tokens[:, i:i + 1], static)[:, -1])
    assert static.offset == eager.offset == 9
    torch.testing.assert_close(torch.stack(got), torch.stack(expected), rtol=1e-5, atol=1e-5)


def _asterisk(shared_data, n: int, start: int = 0) -> list:
    rows = [json.loads(line) for line in (shared_data / "asterisk-en/manifest.jsonl").read_text().splitlines()]
    return [shared_data / "samples/jfk.flac"] + [shared_data / "asterisk-en" / r["audio"]
                                                 for r in rows[start:start + n] if r["duration"] <= 30.0]


def _texts(model, paths, compile_step: bool, beam_size: int | None) -> list[str]:
    opts = TranscribeOptions(decoding=DecodingOptions(language="en", beam_size=beam_size, without_timestamps=True,
                                                      compile=compile_step),
                             fallback=FallbackOptions((0.0,)), batch_size=8, progress=False)
    results, failed = transcribe_files(model, paths, opts)
    assert not failed
    return [r["text"] for r in results]


@pytest.mark.shared
def test_compiled_step_gives_the_eager_transcripts_on_the_parity_clips(shared_data, tiny_en_dir):
    """Clips of test_parity's sets (whose texts equal faster-whisper's): greedy on jfk + 16
    asterisk-en clips, beam 5 on jfk + 6."""
    model = load_model(tiny_en_dir).eval()
    torch._dynamo.reset()
    before = _graphs()
    for beam_size, paths in ((None, _asterisk(shared_data, 16)), (5, _asterisk(shared_data, 6, start=200))):
        eager = _texts(model, paths, False, beam_size)
        compiled = _texts(model, paths, True, beam_size)
        assert [(p.name, t) for p, t in zip(paths, compiled)] == [(p.name, t) for p, t in zip(paths, eager)]
    # Batches of 8 clips, a smaller last batch, then 5 beams per clip: a graph for the first
    # shape, one with the batch dimension dynamic for the other batch sizes, one for 5 rows per audio.
    assert _graphs() - before <= 3


@pytest.mark.shared
def test_no_recompilation_over_a_long_recording(shared_data, tiny_en_dir):
    """Sequential long-form on about 2 minutes, with fallback (best_of 5 samples) and timestamps:
    hundreds of steps at every position and prompt length make one graph for greedy rows and one
    for the fallback's 5 samples per audio, and a second recording adds none."""
    rows = [json.loads(line) for line in (shared_data / "asterisk-en/manifest.jsonl").read_text().splitlines()]
    gap = np.zeros(12800, np.float32)

    def recording(part: list[dict]) -> np.ndarray:
        return np.concatenate([a for r in part for a in (load_audio(shared_data / "asterisk-en" / r["audio"]), gap)])

    model = load_model(tiny_en_dir).eval()
    torch._dynamo.reset()
    before = _graphs()
    opts = TranscribeOptions(decoding=DecodingOptions(language="en", best_of=5, compile=True), progress=False)
    audio = recording(rows[:40])
    result = transcribe_long(model, audio, opts)
    assert len(audio) / 16000 > 100 and len(result["segments"]) > 20
    graphs = _graphs()
    assert 1 <= graphs - before <= 2
    assert transcribe_long(model, recording(rows[300:315]), opts)["segments"]
    assert _graphs() == graphs
