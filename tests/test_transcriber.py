"""Unit tests for the transcriber: fallback choice and the opt-in trimmed encoding (real-weight
WER: test_parity)."""
import torch

from whisper_scratch.audio.geometry import TRIM_MARGIN, TRIM_STEP, trimmed_frames
from whisper_scratch.inference.clips import PaddingWindows, embed_audio, embed_windows, padding_features
from whisper_scratch.inference.decoding import DecodingResult, FallbackOptions
from whisper_scratch.model.whisper import ModelDimensions, Whisper

DIMS = ModelDimensions(n_mels=8, n_audio_ctx=1000, n_audio_state=16, n_audio_head=2, n_audio_layer=1,
                       n_vocab=51864, n_text_ctx=8, n_text_state=16, n_text_head=2, n_text_layer=1)


def test_trimmed_frames_keep_a_margin_and_round_up_to_the_step():
    window = 2 * DIMS.n_audio_ctx
    assert TRIM_MARGIN % TRIM_STEP == 0
    assert trimmed_frames(0, window) == TRIM_MARGIN
    assert trimmed_frames(TRIM_STEP, window) == TRIM_STEP + TRIM_MARGIN
    assert trimmed_frames(TRIM_STEP + 1, window) == 2 * TRIM_STEP + TRIM_MARGIN
    assert trimmed_frames(window, window) == window  # capped at the window


def test_trimmed_features_are_the_clip_then_the_padding_window():
    torch.manual_seed(0)
    model = Whisper(DIMS).eval()
    assert torch.equal(padding_features(model), model.embed_audio(torch.zeros(1, DIMS.n_mels, 2 * DIMS.n_audio_ctx)))
    padding = padding_features(model, level=-0.5)
    assert padding.shape == (1, DIMS.n_audio_ctx, DIMS.n_audio_state)
    mel = torch.randn(3, DIMS.n_mels, 2 * DIMS.n_audio_ctx)
    with torch.no_grad():
        full = embed_audio(model, mel)
        trimmed = embed_audio(model, mel[:, :, :TRIM_STEP], padding)
        alone = model.embed_audio(mel[:, :, :TRIM_STEP])
    assert torch.equal(full, model.embed_audio(mel).detach())  # without padding: the full window
    assert trimmed.shape == full.shape
    half = TRIM_STEP // 2  # encoder positions of the clip's frames
    assert torch.equal(trimmed[:, :half], alone)
    assert torch.equal(trimmed[:, half:], padding[:, half:].expand(3, -1, -1))


def test_windows_of_mixed_lengths_are_encoded_as_each_length_alone():
    """The batched long-form path's chunks (`--batched --trim_padding`): full and trimmed
    windows in one batch, each encoded with the others of its length, in their order."""
    torch.manual_seed(0)
    model = Whisper(DIMS).eval()
    window = 2 * DIMS.n_audio_ctx
    mels = [torch.randn(DIMS.n_mels, n) for n in (window, TRIM_STEP, window, 3 * TRIM_STEP, TRIM_STEP)]
    paddings = PaddingWindows(model)
    features = embed_windows(model, mels, paddings)
    assert features.shape == (len(mels), DIMS.n_audio_ctx, DIMS.n_audio_state)
    for n in (window, TRIM_STEP, 3 * TRIM_STEP):
        rows = [i for i, m in enumerate(mels) if m.shape[-1] == n]
        group = torch.stack([mels[i] for i in rows])
        alone = embed_audio(model, group, paddings(group) if n < window else None)
        assert torch.equal(features[rows], alone)


def _result(text: str, avg_logprob: float, compression_ratio: float) -> DecodingResult:
    return DecodingResult("en", [], text, avg_logprob, 0.0, 0.0, compression_ratio)


def test_failed_fallback_keeps_the_most_likely_attempt_that_does_not_loop():
    fallback = FallbackOptions()  # compression ratio limit 2.4
    looping = _result("go go go go", -0.5, 3.0)
    unlikely, likelier = _result("gee", -1.8, 1.0), _result("see", -1.2, 1.0)
    assert fallback.best_attempt([unlikely, looping, likelier, _result("noise", -2.5, 1.1)]) is likelier
    assert fallback.best_attempt([_result("la la la", -0.9, 2.9), looping]) is looping  # all loop: most likely
