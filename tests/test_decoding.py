"""Sampling at a fallback temperature: seeded, and best_of keeps the most likely of N samples;
the cache's drop of ended audios (greedy and beam search against the reference implementations,
and greedy batches that drop ended rows: test_parity)."""
from dataclasses import replace

import torch

from whisper_scratch.inference.decoding import DecodingOptions, decode
from whisper_scratch.model.whisper import ModelDimensions, Whisper

DIMS = ModelDimensions(n_mels=8, n_audio_ctx=16, n_audio_state=16, n_audio_head=2, n_audio_layer=1,
                       n_vocab=51864, n_text_ctx=16, n_text_state=16, n_text_head=2, n_text_layer=1)
SAMPLING = DecodingOptions(language="en", temperature=1.0, without_timestamps=True, suppress_tokens=None)


def _model_and_features(batch: int) -> tuple[Whisper, torch.Tensor]:
    torch.manual_seed(0)
    model = Whisper(DIMS).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)  # spread-out logits, so that samples differ
        features = model.embed_audio(torch.randn(1, DIMS.n_mels, 2 * DIMS.n_audio_ctx)).expand(batch, -1, -1)
    return model, features


def test_sampling_repeats_with_its_seed():
    model, features = _model_and_features(2)
    first = [r.tokens for r in decode(model, features, SAMPLING)]
    assert [r.tokens for r in decode(model, features, SAMPLING)] == first
    assert first[0] != first[1]  # one random stream: the two rows draw different samples
    other = [r.tokens for r in decode(model, features, replace(SAMPLING, seed=1))]
    assert other != first


def test_best_of_keeps_the_most_likely_sample():
    # best_of = 4 on one audio draws exactly what one sample each on four copies of it draws.
    model, features = _model_and_features(4)
    samples = decode(model, features, SAMPLING)
    assert len({tuple(r.tokens) for r in samples}) > 1
    best = decode(model, features[:1], replace(SAMPLING, best_of=4))
    expected = max(samples, key=lambda r: r.avg_logprob * (len(r.tokens) + 1) / max(len(r.tokens), 1))
    assert len(best) == 1 and best[0].tokens == expected.tokens
    # At temperature 0, best_of is ignored: greedy is one answer.
    greedy = replace(SAMPLING, temperature=0.0)
    assert decode(model, features[:1], replace(greedy, best_of=4))[0].tokens \
        == decode(model, features[:1], greedy)[0].tokens


def test_cache_drop_moves_the_last_kept_audios_into_the_freed_slots():
    rows_per_audio, n_audio = 2, 5
    model = Whisper(DIMS)
    cache = model.decoder.new_cache(n_audio * rows_per_audio, 4, torch.float32, "cpu", rows_per_audio=rows_per_audio)
    cache.self_k = [torch.arange(n_audio * rows_per_audio, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 2, 4, 8).clone()]
    cache.self_v = [k + 100 for k in cache.self_k]
    audio = torch.arange(n_audio, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 2, 16, 8)
    cache.cross = [(audio.clone(), audio + 100)]
    finished = torch.tensor([True, False, False, True, False])
    order = cache.drop(finished)
    assert order.tolist() == [4, 1, 2]  # audio 4 moved into the slot of audio 0; audio 3's slot is cut off
    assert torch.equal(cache.cross[0][0][:, 0, 0, 0], order.float())
    assert torch.equal(cache.cross[0][1][:, 0, 0, 0], order.float() + 100)
    rows = (order[:, None] * rows_per_audio + torch.arange(rows_per_audio)).flatten()
    assert torch.equal(cache.self_k[0][:, 0, 0, 0], rows.float())
    assert torch.equal(cache.self_v[0][:, 0, 0, 0], rows.float() + 100)
    assert cache.noise_cross == [None] * DIMS.n_text_layer
    # Dropping only the last audios moves nothing.
    assert cache.drop(torch.tensor([False, False, True])).tolist() == [0, 1]
