"""Unit tests for the transcriber's opt-in trimmed encoding (real-weight WER: test_parity)."""
import torch

from whisper_scratch.model import ModelDimensions, Whisper
from whisper_scratch.transcriber import TRIM_STEP, _trimmed_frames, embed_audio, padding_features

DIMS = ModelDimensions(n_mels=8, n_audio_ctx=300, n_audio_state=16, n_audio_head=2, n_audio_layer=1,
                       n_vocab=51864, n_text_ctx=8, n_text_state=16, n_text_head=2, n_text_layer=1)


def test_trimmed_frames_round_up_to_the_step():
    window = 2 * DIMS.n_audio_ctx
    assert _trimmed_frames(0, window) == TRIM_STEP  # never zero frames
    assert _trimmed_frames(160 * TRIM_STEP, window) == TRIM_STEP
    assert _trimmed_frames(160 * TRIM_STEP + 160, window) == 2 * TRIM_STEP
    assert _trimmed_frames(160 * 10 * TRIM_STEP, window) == window  # capped at the window


def test_trimmed_features_are_the_clip_then_the_padding_window():
    torch.manual_seed(0)
    model = Whisper(DIMS).eval()
    padding = padding_features(model)
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
