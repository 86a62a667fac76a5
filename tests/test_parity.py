"""Parity with the reference implementations on real weights and real speech.

faster-whisper runs the CTranslate2 files themselves; openai-whisper runs the same weights after
our export to its .pt format. Everyone gets the same 16 kHz waveform (our loader), so the tests
compare models and decoders, not audio decoders."""
import json

import numpy as np
import pytest
import torch

from whisper_scratch.audio.features import log_mel_spectrogram, log_mel_window, pad_or_trim
from whisper_scratch.audio.io import load_audio
from whisper_scratch.evaluation.metrics import error_rates
from whisper_scratch.inference.decoding import DecodingOptions, FallbackOptions, decode
from whisper_scratch.inference.options import TranscribeOptions
from whisper_scratch.inference.transcriber import transcribe_files
from whisper_scratch.model.checkpoint import export_openai, load_model

pytestmark = pytest.mark.shared


def asterisk_clips(shared_data, n: int, start: int = 0) -> list:
    """Clips start..start+n of asterisk-en that fit one 30-second window. Longer recordings are
    transcribed as openai-whisper's transcribe() does (tests/test_longform.py checks that, segment
    for segment), which differs from faster-whisper's long-form with without_timestamps."""
    rows = [json.loads(line) for line in (shared_data / "asterisk-en/manifest.jsonl").read_text().splitlines()]
    return [shared_data / "asterisk-en" / r["audio"] for r in rows[start:start + n] if r["duration"] <= 30.0]


@pytest.fixture(scope="module")
def tiny_en(tiny_en_dir):
    return load_model(tiny_en_dir)


@pytest.fixture(scope="module")
def base(base_dir):
    return load_model(base_dir)


def faster_whisper_texts(model_dir, paths, beam_size: int, language: str = "en") -> list[str]:
    from faster_whisper import WhisperModel

    fw = WhisperModel(str(model_dir), device="cpu", compute_type="float32", cpu_threads=2)
    texts = []
    for p in paths:
        segments, _ = fw.transcribe(load_audio(p), language=language, beam_size=beam_size, temperature=0.0,
                                    without_timestamps=True, condition_on_previous_text=False, vad_filter=False)
        texts.append("".join(s.text for s in segments).strip())
    return texts


def our_texts(model, paths, beam_size: int | None, language: str = "en", trim_padding: bool = False) -> list[str]:
    opts = TranscribeOptions(decoding=DecodingOptions(language=language, beam_size=beam_size, without_timestamps=True),
                             fallback=FallbackOptions((0.0,)), batch_size=8, progress=False, condition_on_previous_text=False,
                             trim_padding=trim_padding)
    results, failed = transcribe_files(model, paths, opts)
    assert not failed
    return [r["text"] for r in results]


def test_tiny_en_greedy_matches_faster_whisper(shared_data, tiny_en, tiny_en_dir):
    paths = [shared_data / "samples/jfk.flac"] + asterisk_clips(shared_data, 40)
    ours = our_texts(tiny_en, paths, None)
    theirs = faster_whisper_texts(tiny_en_dir, paths, beam_size=1)
    assert "ask not what your country can do for you" in ours[0]
    assert [(p.name, a) for p, a in zip(paths, ours)] == [(p.name, b) for p, b in zip(paths, theirs)]


def test_greedy_batch_drops_finished_rows_and_keeps_each_rows_tokens(shared_data, tiny_en):
    """Greedy decoding of a batch computes only the rows still decoding (DecodingTask._sample),
    and each clip's tokens are still those it gets decoded alone, timestamps included."""
    paths = asterisk_clips(shared_data, 8, start=40)
    with torch.no_grad():
        features = tiny_en.embed_audio(torch.stack([log_mel_window(load_audio(p), 80, 3000) for p in paths]))
    options = DecodingOptions(language="en")
    rows_per_step = []
    logits = tiny_en.logits

    def counted(tokens, audio_features, cache=None):
        rows_per_step.append(tokens.shape[0])
        return logits(tokens, audio_features, cache)

    tiny_en.logits = counted
    try:
        together = [r.tokens for r in decode(tiny_en, features, options)]
    finally:
        del tiny_en.logits
    alone = [decode(tiny_en, features[i:i + 1], options)[0].tokens for i in range(len(paths))]
    assert together == alone
    lengths = sorted(len(t) for t in together)
    assert lengths[0] < lengths[-1]
    # A row is fed its initial tokens, then each token it picked before its end of text.
    assert rows_per_step[0] == len(paths) and sum(rows_per_step[1:]) == sum(lengths)


def test_trim_padding_keeps_the_wer(shared_data, tiny_en_dir):
    """The opt-in trimmed encoding is not bound to parity, but must not cost accuracy: it stays
    within a point of the full window's WER. (The --fast preset, which adds silence padding and
    bf16 where the CPU computes it, is held to half the default path's WER by
    test_cli.py::test_evaluate_fast_preset.)"""
    rows = [json.loads(line) for line in (shared_data / "asterisk-en/manifest.jsonl").read_text().splitlines()][:60]
    paths = [shared_data / "asterisk-en" / r["audio"] for r in rows]
    references = [r["text"] for r in rows]
    model = load_model(tiny_en_dir)
    full = our_texts(model, paths, None)
    fast = our_texts(model, paths, None, trim_padding=True)
    full_wer, fast_wer = (error_rates(references, t, "en")["wer"] for t in (full, fast))
    print(f"tiny.en, 60 clips: WER {full_wer:.4f} full windows, {fast_wer:.4f} trimmed")
    assert fast_wer <= full_wer + 0.01
    jfk = our_texts(model, [shared_data / "samples/jfk.flac"], None, trim_padding=True)
    assert "ask not what your country can do for you" in jfk[0]


def test_base_greedy_matches_faster_whisper(shared_data, base, base_dir):
    paths = [shared_data / "samples/jfk.flac"] + asterisk_clips(shared_data, 25, start=100)
    ours = our_texts(base, paths, None)
    theirs = faster_whisper_texts(base_dir, paths, beam_size=1)
    assert [(p.name, a) for p, a in zip(paths, ours)] == [(p.name, b) for p, b in zip(paths, theirs)]


def test_beam5_matches_faster_whisper(shared_data, tiny_en, tiny_en_dir):
    paths = [shared_data / "samples/jfk.flac"] + asterisk_clips(shared_data, 20, start=200)
    ours = our_texts(tiny_en, paths, 5)
    theirs = faster_whisper_texts(tiny_en_dir, paths, beam_size=5)
    assert [(p.name, a) for p, a in zip(paths, ours)] == [(p.name, b) for p, b in zip(paths, theirs)]


def openai_model(our_model, tmp_path):
    import whisper

    path = tmp_path / "export.pt"
    export_openai(our_model, path)
    ckpt = torch.load(path, weights_only=True)
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**ckpt["dims"]))
    model.load_state_dict(ckpt["model_state_dict"])
    return model.eval()


@pytest.mark.parametrize("which", ["tiny_en", "base"])
def test_matches_openai_whisper(which, request, shared_data, tmp_path):
    import whisper

    ours = request.getfixturevalue(which)
    theirs = openai_model(ours, tmp_path)
    paths = [shared_data / "samples/jfk.flac"] + asterisk_clips(shared_data, 12, start=300)
    mels = torch.stack([log_mel_spectrogram(pad_or_trim(load_audio(p))) for p in paths])

    # Teacher-forced logits on the same mel and the same tokens.
    tokens = torch.tensor([[50258, 50259, 50359, 50363] if ours.is_multilingual else [50257, 50362]])
    tokens = torch.cat([tokens, torch.tensor([[400, 370, 452, 7177, 6280, 11, 1029, 406, 437]])], dim=1)
    with torch.no_grad():
        a = ours(mels[:1], tokens)
        b = theirs(mels[:1], tokens)
    assert (a - b).abs().max().item() < 1e-3

    opts = dict(language="en", without_timestamps=True, fp16=False)
    expected = [r.text for r in whisper.decode(theirs, mels, whisper.DecodingOptions(**opts))]
    got = [r.text for r in decode(ours, mels, DecodingOptions(language="en", without_timestamps=True))]
    assert got == expected


def test_language_detection_base(shared_data, base):
    from whisper_scratch.inference.decoding import detect_language
    from whisper_scratch.model.loaded import whisper_vocabulary

    jfk = log_mel_spectrogram(pad_or_trim(load_audio(shared_data / "samples/jfk.flac")))
    multi = load_audio(shared_data / "samples/multilingual.mp3")
    german = log_mel_spectrogram(pad_or_trim(multi[30 * 16000:]))
    with torch.no_grad():
        codes, probs = detect_language(base, base.embed_audio(torch.stack([jfk, german])), whisper_vocabulary(base))
    assert codes == ["en", "de"]
    assert probs[0]["en"] > 0.9


def test_silence_gives_empty_text(tiny_en, base, tmp_path):
    import soundfile

    path = tmp_path / "silence.wav"
    soundfile.write(path, np.zeros(16000 * 5, dtype=np.float32), 16000)
    for model in (tiny_en, base):
        results, _ = transcribe_files(model, [path], TranscribeOptions(progress=False))
        assert results[0]["text"] == ""


def test_dual_attention_at_init_is_the_pretrained_model(shared_data, tiny_en_dir, tmp_path):
    """Real tiny.en with a fresh noise branch: same logits and transcripts bit for bit (fp32);
    saved and loaded it is unchanged; its OpenAI export loads into openai-whisper and agrees."""
    import whisper

    from whisper_scratch.model.checkpoint import save_model

    plain = load_model(tiny_en_dir)
    dual = load_model(tiny_en_dir, dual_attention=True)
    assert dual.noise_parameters()
    mel = log_mel_window(load_audio(shared_data / "samples/jfk.flac"))[None]
    tokens = torch.tensor([[50257, 50362, 400, 370, 452, 7177, 6280]])
    with torch.no_grad():
        expected = plain(mel, tokens)
        assert torch.equal(dual(mel, tokens), expected)
        options = DecodingOptions(language="en", without_timestamps=True)
        assert decode(dual, mel, options)[0].tokens == decode(plain, mel, options)[0].tokens

    save_model(dual, tmp_path / "dual")
    again = load_model(tmp_path / "dual")
    assert again.dual_attention
    with torch.no_grad():
        assert torch.equal(again(mel, tokens), expected)

    export_openai(again, tmp_path / "export.pt", drop_noise_branch=True)  # refused without it
    ckpt = torch.load(tmp_path / "export.pt", weights_only=True)
    reference = whisper.model.Whisper(whisper.model.ModelDimensions(**ckpt["dims"]))
    reference.load_state_dict(ckpt["model_state_dict"])
    with torch.no_grad():
        assert (reference.eval()(mel, tokens) - expected).abs().max().item() < 1e-3
