"""Tests for whisper_scratch.audio: decoding, padding, mel filterbank and log-mel features."""
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from whisper_scratch.audio import io as A
from whisper_scratch.audio.features import log_mel_spectrogram, log_mel_window, mel_filters, pad_or_trim
from whisper_scratch.audio.geometry import HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE
from whisper_scratch.audio.io import AudioError, load_audio


def _sine(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_constants():
    assert (N_SAMPLES, N_FRAMES) == (480000, 3000)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_are_ordered_triangles(n_mels):
    filters = mel_filters(n_mels)
    assert filters.shape == (n_mels, 201) and filters.dtype == torch.float32
    assert (filters >= 0).all()
    peaks = filters.argmax(dim=1)
    # Low filters are narrower than one FFT bin apart, so neighbours may share a peak bin, but never go backwards.
    assert (peaks.diff() >= 0).all() and peaks[-1] > peaks[0]
    for row, peak in zip(filters, peaks):
        support = row.nonzero().flatten()
        assert len(support) > 0 and (support.diff() == 1).all()  # one contiguous band
        assert (row[: peak + 1].diff() >= 0).all() and (row[peak:].diff() <= 0).all()  # rises then falls
    assert mel_filters(n_mels) is filters  # cached


def test_pad_or_trim_numpy_and_torch():
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    assert pad_or_trim(x, 3).tolist() == [[0, 1, 2], [5, 6, 7]]
    padded = pad_or_trim(x, 7)
    assert padded.shape == (2, 7) and (padded[:, 5:] == 0).all() and isinstance(padded, np.ndarray)
    assert pad_or_trim(x, 4, axis=0).shape == (4, 5)
    t = torch.from_numpy(x)
    assert torch.equal(pad_or_trim(t, 3), t[:, :3])
    padded_t = pad_or_trim(t, 7)
    assert isinstance(padded_t, torch.Tensor) and torch.equal(padded_t, torch.from_numpy(padded))
    assert pad_or_trim(t, 1, axis=0).shape == (1, 5) and pad_or_trim(t, 3, axis=0).shape == (3, 5)
    assert pad_or_trim(np.zeros(5)).shape == (N_SAMPLES,)


def test_log_mel_shapes_and_range():
    wave = _sine(2.0, SAMPLE_RATE)
    mel = log_mel_spectrogram(wave)
    assert mel.shape == (80, len(wave) // HOP_LENGTH) and mel.dtype == torch.float32
    assert mel.max() - mel.min() <= 2.0 + 1e-6  # 80 dB floor, scaled by 1/4
    assert log_mel_spectrogram(torch.from_numpy(wave), n_mels=128, padding=N_SAMPLES).shape == (128, 3200)
    assert torch.equal(log_mel_spectrogram(wave.astype(np.float64)), mel)  # always computed in float32


def test_batched_log_mel_equals_per_example():
    rng = np.random.default_rng(0)
    batch = torch.stack([
        torch.from_numpy(_sine(1.0, SAMPLE_RATE, 300.0)),
        torch.from_numpy(_sine(1.0, SAMPLE_RATE, 3000.0, amp=0.001)),  # very quiet: its own 80 dB floor
        torch.from_numpy(rng.standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1),
        torch.zeros(SAMPLE_RATE),
    ])
    batched = log_mel_spectrogram(batch, padding=1000)
    assert batched.shape == (4, 80, (SAMPLE_RATE + 1000) // HOP_LENGTH)
    for i in range(len(batch)):
        assert torch.equal(batched[i], log_mel_spectrogram(batch[i], padding=1000))


def test_log_mel_accepts_path(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, _sine(1.0, SAMPLE_RATE), SAMPLE_RATE)
    assert torch.allclose(log_mel_spectrogram(str(path)), log_mel_spectrogram(load_audio(path)))


def test_load_resamples_stereo_44k_to_16k_mono(tmp_path):
    sr, seconds = 44100, 1.5
    left, right = _sine(seconds, sr, 440.0, 0.6), _sine(seconds, sr, 440.0, 0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="PCM_16")
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - int(seconds * SAMPLE_RATE)) <= 1
    assert np.abs(wave).max() <= 1.0
    # Mono is the channel mean: a 0.4-amplitude 440 Hz tone, away from the edges.
    mid = wave[1000:-1000]
    assert abs(mid.max() - 0.4) < 0.01
    expected = 0.4 * np.sin(2 * np.pi * 440.0 * np.arange(len(wave)) / SAMPLE_RATE)
    assert np.abs(mid - expected[1000:-1000]).max() < 0.01


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"^audio file not found: .*nope\.wav \(check the path\)$"):
        load_audio(tmp_path / "nope.wav")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "zero.wav"
    path.touch()
    with pytest.raises(AudioError, match=r"^empty audio file: .*zero\.wav is 0 bytes"):
        load_audio(path)


def test_zero_sample_wav(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros((0, 1), dtype=np.float32), SAMPLE_RATE)
    assert path.stat().st_size > 0  # a real header, just no frames
    with pytest.raises(AudioError, match=r"^empty audio: .*silent\.wav has no samples$"):
        load_audio(path)


def test_corrupt_file(tmp_path, monkeypatch):
    monkeypatch.setattr(A.shutil, "which", lambda name: None)  # same message whether or not ffmpeg is installed
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00not really a wave file" * 10)
    with pytest.raises(AudioError, match=r"^cannot decode .*broken\.wav: .*is it a valid audio file\?") as err:
        load_audio(path)
    assert "\n" not in str(err.value)


def test_corrupt_mp3_is_not_called_missing(tmp_path, monkeypatch):
    """libsndfile's mp3 reader calls a file of junk bytes "File does not exist": the message must
    not send the user to check a path that is fine."""
    monkeypatch.setattr(A.shutil, "which", lambda name: None)
    path = tmp_path / "corrupt.mp3"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError) as err:
        load_audio(path)
    message = str(err.value)
    assert message.startswith(f"cannot decode {path}: no audio frame could be decoded (is it a valid audio file?")
    assert "exist" not in message and "Error opening" not in message


def test_c_decoder_messages_are_dropped_and_other_stderr_is_kept(capfd):
    """While a decode is captured, the C decoder's notes vanish; text from elsewhere (another
    thread's progress bar, a warning) still reaches stderr, in order."""
    with A.C_STDERR.captured():
        os.write(2, b"\r 40%|####      | 2/5")
        with A.C_STDERR.captured():  # a second decode at the same time shares the capture
            os.write(2, b"Note: Illegal Audio-MPEG-Header 0x00000000 at offset 2003.\nNote: Trying to resync...\n")
            os.write(2, b"[src/libmpg123/id3.c:INT123_parse_new_id3():916] error: Bad tag length\n")
        os.write(2, b"\r 60%|######    | 3/5\nx.py:3: UserWarning: kept\n")
    assert capfd.readouterr().err == "\r 40%|####      | 2/5\r 60%|######    | 3/5\nx.py:3: UserWarning: kept\n"


def test_unsupported_container_without_ffmpeg(tmp_path, monkeypatch):
    monkeypatch.setattr(A.shutil, "which", lambda name: None)
    path = tmp_path / "clip.m4a"
    path.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(200))
    with pytest.raises(AudioError, match=r"ffmpeg is needed for \.m4a files") as err:
        load_audio(path)
    assert "\n" not in str(err.value)


def test_ffmpeg_fallback(tmp_path, monkeypatch):
    # A stand-in ffmpeg on PATH that prints two s16le samples checks the fallback plumbing without ffmpeg.
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nprintf '\\000\\100\\000\\300'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    path = tmp_path / "clip.m4a"
    path.write_bytes(bytes(64))
    assert load_audio(path).tolist() == [0.5, -0.5]


# --- against openai-whisper and real speech (WHISPER_SCRATCH_SHARED=1) ---


def _whisper():
    """The openai-whisper oracle; a missing install is an error under the switch, never a skip."""
    import whisper

    return whisper


@pytest.mark.shared
@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_match_openai_whisper(n_mels):
    npz = Path(_whisper().__file__).parent / "assets" / "mel_filters.npz"
    with np.load(npz) as assets:
        reference = assets[f"mel_{n_mels}"]
    assert np.abs(mel_filters(n_mels).numpy() - reference).max() < 1e-7


@pytest.mark.shared
@pytest.mark.parametrize("n_mels, padding", [(80, 0), (80, N_SAMPLES), (128, N_SAMPLES)])
def test_log_mel_matches_openai_whisper_on_jfk(shared_data, n_mels, padding):
    wave = load_audio(shared_data / "samples" / "jfk.flac")
    assert abs(len(wave) / SAMPLE_RATE - 11.0) < 0.1
    ours = log_mel_spectrogram(wave, n_mels=n_mels, padding=padding)
    reference = _whisper().log_mel_spectrogram(torch.from_numpy(wave), n_mels=n_mels, padding=padding)
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max().item() < 1e-4


@pytest.mark.shared
def test_mp3_decodes(shared_data):
    wave = load_audio(shared_data / "samples" / "multilingual.mp3")
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) / SAMPLE_RATE - 60.0) < 0.5
    assert 0.01 < np.abs(wave).max() <= 1.0


@pytest.mark.shared
def test_silence_padded_window_matches_hugging_face_feature_extractor(shared_data):
    """silence_padding feeds the model what Hugging Face's WhisperFeatureExtractor computes: the
    waveform padded with silence to 30 s, then the log-mel (its floor is the clip's peak - 80 dB)."""
    from transformers import WhisperFeatureExtractor

    audio = load_audio(shared_data / "samples/jfk.flac")
    theirs = WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=16000, return_tensors="np").input_features[0]
    ours = log_mel_window(audio, 80, silence_padding=True)
    assert ours.shape == (80, 3000)
    assert np.abs(ours.numpy() - theirs).max() < 1e-4
    content = len(audio) // 160
    assert torch.all(ours[:, content + 2:] == ours.min())  # padding frames sit at the floor
    assert not torch.equal(ours, log_mel_window(audio, 80))  # the default pads with zero frames
