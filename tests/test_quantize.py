"""`--quantize int8|fp16`: torch's quantized linear layers on the CPU (model/quantize.py), and the
float32 logits of a bf16 model (`fp32_logits`).

What must hold: the quantized model's logits stay near fp32's (fp16 weights: within rounding;
int8: close enough to keep the top token mostly), nothing quantized is ever saved or exported,
the option combines with every decoding mode, and on real speech fp16 weights keep fp32's
transcripts while int8's word error rate stays within what was measured (docs/benchmarks.md)."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

from whisper_scratch.audio.features import log_mel_window
from whisper_scratch.audio.io import load_audio
from whisper_scratch.cli import export as export_cli
from whisper_scratch.cli import transcribe
from whisper_scratch.evaluation.metrics import error_rates
from whisper_scratch.inference.decoding import DecodingOptions
from whisper_scratch.inference.options import TranscribeOptions, fast_dtype
from whisper_scratch.inference.transcriber import transcribe_files
from whisper_scratch.model import quantize
from whisper_scratch.model.checkpoint import save_model
from whisper_scratch.model.export import ExportError, export_model
from whisper_scratch.model.loaded import LoadedModel
from whisper_scratch.model.quantize import QUANTIZATIONS, fp32_logits, is_quantized, quantize_linear
from whisper_scratch.model.whisper import ModelDimensions, Whisper

REPO = Path(__file__).resolve().parents[1]
ASTERISK16 = REPO / "tests/data/asterisk16"

# Measured (docs/benchmarks.md, "What the weights cost in words"): base, standard scoring, default
# path. Czech test, first 40 clips: fp32 70.86 %, int8 73.02 % (+2.16 points); the first 20 clips
# (111 words, a word is 0.9 points): fp32 76.58 %, int8 78.38 % (+1.80), with one torch thread and
# with two, on the 2-core AVX2 EPYC. On the 2-core AMX Xeon torch's int8 kernels (the default x86
# engine) give 88.29 % on the 20 clips (+11.71; one clip falls into a repetition loop) and 81.65 % on
# the 40 (+10.79). The 141 asterisk-en clips are test_cli.py's, beside their fp32 run.
INT8_CZECH_DELTA = 0.1171 + 0.027  # the largest rise measured on the 20 clips, plus 3 words' room for other CPUs


def _small() -> Whisper:
    dims = ModelDimensions(n_mels=80, n_audio_ctx=32, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
                           n_vocab=51864, n_text_ctx=16, n_text_state=64, n_text_head=2, n_text_layer=2)
    torch.manual_seed(0)
    return Whisper(dims).eval()


@pytest.mark.parametrize("kind, tolerance", [("fp16", 1e-3), ("int8", 0.1)])
def test_quantized_logits_follow_fp32(kind, tolerance):
    model = _small()
    mel = torch.randn(2, 80, 64)
    tokens = torch.randint(0, 50000, (2, 6))
    with torch.no_grad():
        expected = model.logits(tokens, model.embed_audio(mel))
        quantized = quantize_linear(model, kind)
        got = quantized.logits(tokens, quantized.embed_audio(mel))
    assert is_quantized(quantized)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    relative = ((got - expected).norm() / expected.norm()).item()
    assert 0 < relative < tolerance, relative  # quantized (not a no-op), and close
    # Every linear layer and the output projection hold quantized weights; no float nn.Linear is left.
    assert not [n for n, m in quantized.named_modules() if type(m) is torch.nn.Linear]
    assert quantized.decoder.output_projection is not None


def test_quantize_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="bf16|bfloat16"):
        quantize_linear(_small().to(torch.bfloat16), "int8")
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        quantize_linear(_small().train(), "int8")
    with pytest.raises(ValueError, match="unknown quantization 'int4'"):
        quantize_linear(_small(), "int4")
    assert set(QUANTIZATIONS) == {"int8", "fp16"}


def test_quantized_model_is_never_saved_or_exported(tmp_path):
    model = quantize_linear(_small(), "int8")
    with pytest.raises(ValueError, match="save the float model"):
        save_model(model, tmp_path / "model.pt")
    with pytest.raises(ExportError, match="compute_type='int8'"):
        export_model(model, "ct2", tmp_path / "ct2")
    assert not list(tmp_path.iterdir())
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = export_cli.main([str(tmp_path / "any.pt"), "--to", "ct2", str(tmp_path / "out"), "--dtype", "int8"])
    assert code == 2
    assert err.getvalue().strip().splitlines() == [
        ("error: --dtype int8: quantized weights are not exported: export the float model (--dtype fp16 for ct2, "
         "fp32 for hf and openai); faster-whisper runs a float model in int8 with compute_type='int8'")]


@pytest.mark.parametrize("argv, message", [
    (["--quantize", "int8", "--dtype", "bf16"], "--quantize int8 takes fp32 activations: drop --dtype bf16"),
    (["--quantize", "fp16", "--device", "cuda"], "--quantize fp16 runs on the CPU only"),
])
def test_cli_refuses_quantize_with_another_precision_or_a_gpu(argv, message, tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = transcribe.main(["--model_path", str(tmp_path / "none"), "--audio_path", str(tmp_path / "a.wav"), *argv])
    assert code == 2
    assert message in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1


@pytest.mark.parametrize("native_bf16", [True, False])
def test_fast_takes_bf16_only_where_the_cpu_computes_it_and_never_with_quantize(monkeypatch, native_bf16):
    from whisper_scratch.inference import options

    monkeypatch.setattr(options, "cpu_native_bf16", lambda: native_bf16)
    assert fast_dtype(None, "cpu") == ("bf16" if native_bf16 else "fp32")
    assert fast_dtype(None, "cpu", "int8") == "fp32"
    assert fast_dtype("fp32", "cpu") == "fp32" and fast_dtype("bf16", "cpu") == "bf16"
    assert fast_dtype(None, "cuda") is None


def _on_bf16_grid(logits: torch.Tensor) -> bool:
    return bool((logits.bfloat16().float() == logits).all())


@pytest.mark.parametrize("fp16_kernel", [True, False])  # x86's fp16 linear; a float32 copy elsewhere (as on a GPU)
def test_bf16_model_computes_float32_logits(monkeypatch, fp16_kernel, tmp_path):
    """A bf16 model's logits are rounded to bf16's 8-bit mantissa (steps of 0.125 at 20); with
    fp32_logits they are the float32 product of the same bf16 activations and weights."""
    monkeypatch.setattr(quantize, "has_fp16_linear", lambda device: fp16_kernel)
    model = _small().to(torch.bfloat16)
    mel = torch.randn(2, 80, 64, dtype=torch.bfloat16)
    tokens = torch.randint(0, 50000, (2, 6))
    with torch.no_grad():
        features = model.embed_audio(mel)
        plain = model.logits(tokens, features)
        hidden = []
        hook = model.decoder.ln.register_forward_hook(lambda _m, _i, out: hidden.append(out))
        fp32_logits(model)
        got = model.logits(tokens, features)
        hook.remove()
    expected = hidden[0].float() @ model.decoder.token_embedding.weight.float().T
    assert got.dtype == torch.float32 and got.shape == plain.shape
    assert _on_bf16_grid(plain) and not _on_bf16_grid(got)
    tolerance = 1e-3 if fp16_kernel else 1e-5  # fp16 weights: the bf16 values' last bits and fp16's rounding
    assert torch.allclose(got, expected, rtol=tolerance, atol=tolerance), (got - expected).abs().max()
    assert torch.allclose(got, plain, rtol=1e-2, atol=1e-2)  # the same logits, finer
    assert is_quantized(model) and model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="save the float model"):
        save_model(model, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="not float32"):
        fp32_logits(_small())
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        fp32_logits(_small().to(torch.bfloat16).train())


def test_decoding_under_bf16_autocast_computes_float32_logits():
    """The trainer evaluates a float32 model under bf16 autocast: decoding (eval mode) takes its
    logits in float32, off bf16's grid; the training forward keeps autocast's bf16 product."""
    model = _small()
    mel = torch.randn(2, 80, 64)
    tokens = torch.randint(0, 50000, (2, 6))
    with torch.no_grad():
        expected = model.logits(tokens, model.embed_audio(mel))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            decoding = model.logits(tokens, model.embed_audio(mel))
            training = model.train().logits(tokens, model.embed_audio(mel))
    assert decoding.dtype == torch.float32 and not _on_bf16_grid(decoding)
    assert _on_bf16_grid(training)
    assert torch.allclose(decoding, expected, rtol=2e-2, atol=2e-2)


@pytest.mark.shared
def test_bf16_logits_have_no_ties_on_real_speech(tiny_en_dir):
    """tiny.en in bf16 on the 16 asterisk clips, fed fp32's greedy tokens: bf16-rounded logits tie
    for the top (greedy then takes the lower token id, as digits and punctuation are: the loops of
    "9. 9. 9." on the 30-minute recording, docs/benchmarks.md); LoadedModel's bf16 model does not,
    and takes fp32's greedy token at least as often."""
    paths, _ = _asterisk16()
    fp32 = LoadedModel.load(tiny_en_dir, dtype="fp32").model.eval()
    fixed = LoadedModel.load(tiny_en_dir, dtype="bf16").model
    plain = LoadedModel.load(tiny_en_dir, dtype="fp32").model.eval().to(torch.bfloat16)
    assert fixed.decoder.output_projection is not None and plain.decoder.output_projection is None
    ties, agree = {"plain": 0, "fixed": 0}, {"plain": 0, "fixed": 0}
    with torch.no_grad():
        for path in paths:
            mel = log_mel_window(load_audio(path), fp32.dims.n_mels)[None]
            tokens = torch.tensor([[50257, 50362]])  # <|startoftranscript|><|notimestamps|> of tiny.en
            features = fp32.embed_audio(mel)
            while tokens.shape[1] < 24:
                greedy = fp32.logits(tokens, features)[0, -1].argmax()
                if greedy == 50256:  # <|endoftext|>
                    break
                tokens = torch.cat([tokens, greedy.view(1, 1)], dim=1)
            reference = fp32.logits(tokens, features)[0].argmax(-1)
            for name, model in (("plain", plain), ("fixed", fixed)):
                logits = model.logits(tokens, model.embed_audio(mel.bfloat16()))[0]
                top = logits.topk(2, dim=-1).values
                ties[name] += int((top[:, 0] == top[:, 1]).sum())
                agree[name] += int((logits.argmax(-1) == reference).sum())
    print(f"top-2 ties {ties}, fp32's greedy token {agree}")
    assert ties["plain"] > 0 and ties["fixed"] == 0, ties
    assert agree["fixed"] >= agree["plain"], agree


def _asterisk16() -> tuple[list[Path], list[str]]:
    rows = [json.loads(line) for line in (ASTERISK16 / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return [ASTERISK16 / r["audio"] for r in rows], [r["text"] for r in rows]


@pytest.mark.shared
def test_fp16_weights_keep_tiny_en_transcripts_and_int8_stays_close(tiny_en_dir):
    paths, references = _asterisk16()
    opts = TranscribeOptions(decoding=DecodingOptions(language="en"), progress=False)
    texts = {}
    for kind in (None, "fp16", "int8"):
        loaded = LoadedModel.load(tiny_en_dir, quantize=kind)
        results, failed = transcribe_files(loaded.model, paths, opts, loaded.tokenizer)
        assert not failed
        texts[kind] = [r["text"] for r in results]
    assert texts["fp16"] == texts[None]
    fp32, int8 = (error_rates(references, texts[k], "en")["wer"] for k in (None, "int8"))
    print(f"tiny.en asterisk16 WER: fp32 {fp32:.4f} int8 {int8:.4f}")
    # Whether int8 changes a word here depends on the CPU's int8 kernels (an earlier CPU: one word;
    # an AMX Xeon: none), so only its bound is asserted; test_quantized_logits_follow_fp32 shows it is
    # no no-op.
    assert int8 <= fp32 + 0.03, (fp32, int8)


@pytest.mark.shared
def test_quantize_combines_with_batched_word_timestamps_and_lm(tiny_en_dir, shared_data, tmp_path):
    """--quantize int8 through the command line with --batched and word timestamps, and with beam
    search fused with an LM: each run ends 0 with words in order."""
    from whisper_scratch.lm.command import main as lm_main

    audio = shared_data / "samples" / "jfk.flac"
    out = tmp_path / "batched.json"
    code = transcribe.main(["--model_path", str(tiny_en_dir), "--audio_path", str(audio), "--quantize", "int8",
                            "--batched", "--word_timestamps", "--output_file", str(out), "--language", "en"])
    assert code == 0
    (result,) = json.loads(out.read_text())
    words = [w for s in result["segments"] for w in s["words"]]
    assert "country" in result["text"].lower() and len(words) >= 15
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))
    text = tmp_path / "text.txt"
    text.write_text("ask not what your country can do for you\nask what you can do for your country\n")
    lm = tmp_path / "lm.arpa"
    with contextlib.redirect_stderr(io.StringIO()):
        assert lm_main(["build", "--text", str(text), "--language", "en", "--order", "3", "--out", str(lm)]) == 0
    fused = tmp_path / "fused.json"
    code = transcribe.main(["--model_path", str(tiny_en_dir), "--audio_path", str(audio), "--quantize", "fp16",
                            "--beam_size", "5", "--lm", str(lm), "--lm_alpha", "0.3", "--output_file", str(fused),
                            "--language", "en"])
    assert code == 0 and "country" in json.loads(fused.read_text())[0]["text"].lower()


def _evaluate(model_dir: Path, manifest: Path, out: Path, *extra: str) -> dict:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = transcribe.main(["--model_path", str(model_dir), "--mode", "evaluate", "--manifest", str(manifest),
                                "--output_file", str(out), "--batch_size", "16", *extra])
    assert code == 0
    return json.loads(out.read_text())


@pytest.mark.shared
def test_czech_base_int8_within_measured(base_dir, shared_data, tmp_path):
    """The first 20 Czech test clips with base, in the listing's language: int8's WER rises by no
    more than measured. (The docs' figure is on 40 clips; 20 keep CI within its time. fp16 weights
    gave fp32's 40 transcripts when measured; the tiny.en test above holds them to that, at a
    fraction of the time.)"""
    listing = shared_data / "fillets-cv" / "cs" / "test.tsv"
    manifest = tmp_path / "test20.tsv"
    (tmp_path / "clips").symlink_to(listing.parent / "clips")
    manifest.write_text("".join(listing.read_text(encoding="utf-8").splitlines(keepends=True)[:21]), encoding="utf-8")
    reports = {kind: _evaluate(base_dir, manifest, tmp_path / f"{kind}.json", *(["--quantize", kind] if kind else []))
               for kind in (None, "int8")}
    fp32 = reports[None]
    print("base Czech 20 WER:", {str(kind): round(r["wer"], 4) for kind, r in reports.items()})
    assert len(fp32["utterances"]) == 20
    assert reports["int8"]["wer"] - fp32["wer"] <= INT8_CZECH_DELTA, (fp32["wer"], reports["int8"]["wer"])
