"""n-gram language models (whisper_scratch.lm) and their shallow fusion into beam search.

The estimator is checked against numbers worked out by hand on a three-sentence corpus and
against a second, deliberately plain implementation of interpolated modified Kneser-Ney (sets
and recursion, no shared code) on a random corpus; every context's distribution sums to one, with
and without pruning; ARPA files are written and read back exactly. Fusion with α = β = 0 gives
plain beam search's tokens on a random model; on a scripted decoder (fixed next-token
probabilities) an LM flips "there" to "their" only where its history says so. `shared` tests run
the real tiny.en: an LM changes a word of jfk.flac, and long-form and batched runs take --lm."""
import gzip
import json
import math
import os
import random
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_cli import one_error_line

from whisper_scratch.audio.geometry import HOP_LENGTH, SAMPLE_RATE, window_frames
from whisper_scratch.cli import main as whisper_scratch
from whisper_scratch.cli import transcribe
from whisper_scratch.data.manifest import Utterance
from whisper_scratch.evaluation.metrics import utterance_word_errors
from whisper_scratch.inference.decoding import DecodingOptions, DecodingTask, decode
from whisper_scratch.lm import tune as tuning
from whisper_scratch.lm.arpa import ArpaError, read_arpa, write_arpa
from whisper_scratch.lm.fusion import NgramScorer, read_lm, scorer_for, vocabulary_overlap
from whisper_scratch.lm.kneser_ney import (
    BOS,
    EOS,
    FALLBACK_DISCOUNTS,
    UNK,
    NgramModel,
    count_ngrams,
    discounts,
    estimate,
)
from whisper_scratch.lm.text import word_splitter
from whisper_scratch.lm.tune import ALPHAS, BETAS, Trial, best_trial, search
from whisper_scratch.model.loaded import LoadedModel, whisper_vocabulary
from whisper_scratch.model.whisper import ModelDimensions, Whisper

DIMS = ModelDimensions(n_mels=8, n_audio_ctx=16, n_audio_state=16, n_audio_head=2, n_audio_layer=1,
                       n_vocab=51864, n_text_ctx=24, n_text_state=16, n_text_head=2, n_text_layer=1)
TK = whisper_vocabulary(Whisper(DIMS))


def build(sentences: list[list[str]], order: int, prune: tuple[int, ...] = ()) -> NgramModel:
    return estimate(count_ngrams(sentences, order), prune)


def random_corpus(n: int = 200, seed: int = 0) -> list[list[str]]:
    """Sentences of 1-8 words of a Markov chain over 100 words (each followed by one of 3, with
    Zipf-like weights): at n = 200 every order's count-of-counts give discounts from the formula,
    not the fallback, as text does."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(100)]
    following = {w: rng.sample(words, 3) for w in words}
    sentences = []
    for _ in range(n):
        sentence = rng.choices(words, [1 / (i + 1) for i in range(100)])
        for _ in range(rng.randint(0, 7)):
            sentence += rng.choices(following[sentence[-1]], [1, 1 / 2, 1 / 3])
        sentences.append(sentence)
    return sentences


def vocabulary(model: NgramModel) -> list[str]:
    """Every word a model predicts: its words, </s> and <unk> (not <s>)."""
    return sorted(model.vocabulary() | {EOS, UNK})


# -- the estimator ----------------------------------------------------------------------------

def test_bigram_probabilities_worked_out_by_hand():
    # <s> a b </s> / <s> a c </s> / <s> b a b </s>. Count-of-counts lack n3, so D = 0.5, 1, 1.5.
    # Unigram continuation counts: a {<s>, b} 2, b {a, <s>} 2, c {a} 1, </s> {b, c} 2; total 7;
    # discounted mass 3 * 1 + 0.5 = 3.5, so gamma = 0.5, spread over 5 words (a b c </s> <unk>).
    model = build([["a", "b"], ["a", "c"], ["b", "a", "b"]], 2)
    p = {w: 10 ** model.log10_prob(w) for w in ("a", "b", "c", EOS, UNK)}
    assert p["a"] == pytest.approx(1 / 7 + 0.1, rel=1e-6)
    assert p["b"] == pytest.approx(1 / 7 + 0.1, rel=1e-6)
    assert p[EOS] == pytest.approx(1 / 7 + 0.1, rel=1e-6)
    assert p["c"] == pytest.approx(0.5 / 7 + 0.1, rel=1e-6)
    assert p[UNK] == pytest.approx(0.1, rel=1e-6)
    # After "a": c(a b) = 2, c(a c) = 1, so gamma(a) = (1 + 0.5) / 3 = 0.5.
    assert 10 ** model.log10_prob("b", ["a"]) == pytest.approx(1 / 3 + 0.5 * p["b"], rel=1e-6)
    assert 10 ** model.log10_prob("c", ["a"]) == pytest.approx(0.5 / 3 + 0.5 * p["c"], rel=1e-6)
    assert 10 ** model.log10_prob("a", ["a"]) == pytest.approx(0.5 * p["a"], rel=1e-6)  # unseen: backed off
    # After <s>: c(<s> a) = 2, c(<s> b) = 1 (raw counts: nothing comes before <s>).
    assert 10 ** model.log10_prob("a", [BOS]) == pytest.approx(1 / 3 + 0.5 * p["a"], rel=1e-6)
    assert 10 ** model.log10_prob("zebra", ["a"]) == pytest.approx(0.5 * p[UNK], rel=1e-6)  # unknown: <unk>


def plain_kneser_ney(sentences: list[list[str]], order: int):
    """A second implementation, straight from the definitions: p(word, history) -> probability."""
    padded = [[BOS, *s, EOS] for s in sentences]
    raw = Counter(tuple(p[i:i + n]) for p in padded for n in range(1, order + 1) for i in range(len(p) - n + 1))
    del raw[(BOS,)]
    left = {}  # n-gram -> the words seen before it
    for gram in raw:
        if len(gram) > 1:
            left.setdefault(gram[1:], set()).add(gram[0])

    def count(gram):
        return raw[gram] if len(gram) == order or gram[0] == BOS else len(left.get(gram, ()))

    by_order = [[g for g in raw if len(g) == n and count(g) > 0] for n in range(1, order + 1)]
    d = []
    for grams in by_order:
        n_k = Counter(min(count(g), 4) for g in grams)
        y = n_k[1] / (n_k[1] + 2 * n_k[2])
        d.append((1 - 2 * y * n_k[2] / n_k[1], 2 - 3 * y * n_k[3] / n_k[2], 3 - 4 * y * n_k[4] / n_k[3]))
    words = {w for s in sentences for w in s} | {EOS, UNK}

    def p(word, history):
        history = tuple(history)[-(order - 1):] if order > 1 else ()
        n = len(history) + 1
        children = [g for g in by_order[n - 1] if g[:-1] == history]
        lower = 1 / len(words) if not history else p(word, history[1:])
        if not children:
            return lower
        total = sum(count(g) for g in children)
        gamma = sum(d[n - 1][min(count(g), 3) - 1] for g in children) / total
        c = count((*history, word))
        seen = (c - d[n - 1][min(c, 3) - 1]) / total if c else 0.0
        return seen + gamma * lower

    return p, d


def test_matches_a_plain_implementation_of_modified_kneser_ney():
    corpus = random_corpus()
    reference, reference_discounts = plain_kneser_ney(corpus, 3)
    raw = count_ngrams(corpus, 3)
    model = estimate(raw)
    assert discounts(raw[2].values()) == pytest.approx(reference_discounts[2])  # the top order's are raw
    assert all(d != FALLBACK_DISCOUNTS for d in reference_discounts)  # the formula, at every order
    histories = [(), (BOS,), ("w0",), ("w3",), (BOS, "w1"), ("w0", "w1"), ("w2", "w14"), ("w14", "w13"), ("zz", "w0")]
    for history in histories:
        for word in vocabulary(model):
            assert model.log10_prob(word, history) == pytest.approx(math.log10(reference(word, history)), abs=2e-6), \
                (word, history)


@pytest.mark.parametrize("prune", [(), (0, 1), (0, 1, 2), (0, 0, 3)])
def test_every_context_sums_to_one(prune):
    model = build(random_corpus(), 3, prune)
    words = vocabulary(model)
    contexts = [()] + [g for level in model.probs[:-1] for g in level if g[-1] != EOS] + [("nope",), ("w0", "nope")]
    for history in contexts:
        total = sum(10 ** model.log10_prob(w, history) for w in words)
        assert total == pytest.approx(1.0, abs=2e-5), history


def test_pruning_drops_rare_ngrams_and_keeps_their_contexts():
    corpus = random_corpus()
    raw = count_ngrams(corpus, 3)
    full, pruned = estimate(raw), estimate(raw, (0, 1, 2))
    assert pruned.counts()[0] == full.counts()[0]
    assert set(pruned.probs[1]) == {g for g, c in raw[1].items() if c > 1}
    assert set(pruned.probs[2]) == {g for g, c in raw[2].items() if c > 2}
    for gram in pruned.probs[2]:
        assert gram[:-1] in pruned.probs[1] and gram[1:] in pruned.probs[1]
    for bad in [(1, 1), (0, 2, 1), (0, -1)]:
        with pytest.raises(ValueError):
            estimate(raw, bad)


def test_tiny_text_falls_back_to_fixed_discounts():
    assert discounts([1, 1, 2]) == FALLBACK_DISCOUNTS
    assert discounts([1] * 10 + [2] * 5 + [3] * 3 + [4] * 2) != FALLBACK_DISCOUNTS
    model = build([["one"]], 3)  # a single one-word sentence still gives a proper model
    assert sum(10 ** model.log10_prob(w, [BOS]) for w in vocabulary(model)) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="no words"):
        build([], 2)


# -- ARPA files -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lm.arpa", "lm.arpa.gz"])
def test_arpa_written_and_read_back_exactly(tmp_path, name):
    model = build(random_corpus(200), 3, (0, 1))
    path = write_arpa(model, tmp_path / name)
    back = read_arpa(path)
    assert back.order == model.order and back.probs == model.probs and back.backoffs == model.backoffs
    first = path.read_bytes()
    assert write_arpa(back, tmp_path / name).read_bytes() == first  # the same model, the same bytes
    text = gzip.decompress(first) if name.endswith(".gz") else first
    assert text.startswith(b"\\data\\\nngram 1=") and text.endswith(b"\\end\\\n")


def test_reads_an_arpa_file_written_elsewhere(tmp_path):
    # Space-separated as some tools write it, a header comment line, no <unk>.
    (tmp_path / "other.arpa").write_text(
        "\\data\\\nngram 1=4\nngram 2=2\n\n\\1-grams:\n-1.0 <s> -0.30103\n-0.5 hello -0.2\n-0.7 world\n"
        "-0.6 </s>\n\n\\2-grams:\n-0.1 <s> hello\n-0.2 hello world\n\n\\end\\\n")
    model = read_arpa(tmp_path / "other.arpa")
    assert model.counts() == [4, 2]
    assert model.log10_prob("hello", ["<s>"]) == pytest.approx(-0.1)
    assert model.log10_prob("world", ["<s>"]) == pytest.approx(-0.30103 - 0.7)
    assert model.log10_prob("nothing") == -100.0  # no <unk>: KenLM's score for it


@pytest.mark.parametrize("content, needle", [
    (None, "not found"),
    (b"", "empty file"),
    (b"hello world\n", "not an ARPA language model"),
    (b"\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\thello\n", "truncated"),
    (b"\\data\\\nngram 1=3\n\n\\1-grams:\n-1.0\thello\n-1\t</s>\n\\end\\\n", "declares [3]"),
    (b"\\data\\\nngram 1=1\n\n\\1-grams:\nx\thello\n\\end\\\n", "not a number"),
    (b"\x1f\x8b\x08\x00garbage", "damaged gzip"),
    (b"\xff\xfe\x00binary", "not text"),
])
def test_bad_arpa_files_are_named(tmp_path, content, needle):
    path = tmp_path / "bad.arpa"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ArpaError, match="bad.arpa") as e:
        read_arpa(path)
    assert needle in str(e.value)


# -- fusion -----------------------------------------------------------------------------------

def random_model() -> tuple[Whisper, torch.Tensor]:
    torch.manual_seed(0)
    model = Whisper(DIMS).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
        features = model.embed_audio(torch.randn(3, DIMS.n_mels, 2 * DIMS.n_audio_ctx))
    return model, features


@pytest.mark.parametrize("timestamps, prompt", [(False, None), (True, None), (True, "so it goes")])
def test_fusion_with_zero_weights_is_plain_beam_search(timestamps, prompt):
    model, features = random_model()
    options = DecodingOptions(language="en", beam_size=4, without_timestamps=not timestamps, prompt=prompt)
    lm = NgramScorer(build(random_corpus(50), 3), word_splitter("en"))
    plain = decode(model, features, options)
    fused = decode(model, features, replace(options, lm=lm, lm_alpha=0.0, lm_beta=0.0))
    assert [r.tokens for r in fused] == [r.tokens for r in plain]
    assert [r.avg_logprob for r in fused] == [r.avg_logprob for r in plain]


THERE, THEIR, COUNTRY = (TK.encode(w)[0] for w in (" there", " their", " country"))


class ScriptedDecoder(Whisper):
    """A decoder whose next-token probabilities depend only on the last token fed in: after the
    start, " there" 0.6 and " their" 0.4; then " country"; then the end of text."""

    SCRIPT = {TK.no_timestamps: {THERE: 0.6, THEIR: 0.4}, THERE: {COUNTRY: 1.0}, THEIR: {COUNTRY: 1.0},
              COUNTRY: {TK.eot: 1.0}}

    def logits(self, tokens, audio_features, cache=None):
        out = torch.full((*tokens.shape, self.dims.n_vocab), -40.0)
        for i, last in enumerate(tokens[:, -1].tolist()):
            for token, p in self.SCRIPT.get(last, {TK.eot: 1.0}).items():
                out[i, -1, token] = math.log(p)
        return out


def scripted(options: DecodingOptions) -> str:
    model = ScriptedDecoder(DIMS).eval()
    features = torch.zeros(1, DIMS.n_audio_ctx, DIMS.n_audio_state)
    result = DecodingTask(model, TK, options).run(features)[0]
    # The decoder's own log-probability, LM or not, so the fallback's thresholds keep their meaning.
    assert result.avg_logprob == pytest.approx(math.log(0.6 if result.tokens[0] == THERE else 0.4) / 3, abs=1e-5)
    return result.text


def test_an_lm_changes_the_word_its_history_calls_for():
    options = DecodingOptions(language="en", beam_size=3, without_timestamps=True, suppress_tokens=None)
    lm = NgramScorer(build([["they", "love", "their", "country"]] * 5 + [["there", "country"]] * 5, 3),
                     word_splitter("en"))
    assert scripted(options) == "there country"
    assert scripted(replace(options, lm=lm, lm_alpha=1.0)) == "there country"  # after <s>, "there" is likely
    # The prompt (a long recording's text so far) is the LM's history: after "they love", "their".
    assert scripted(replace(options, prompt="They love")) == "there country"
    assert scripted(replace(options, prompt="They love", lm=lm, lm_alpha=1.0)) == "their country"


def test_scorer_normalises_words_as_scoring_does():
    model = build([["hello", "world"]] * 3, 2)
    scorer = NgramScorer(model, word_splitter("cs"))
    start = scorer.start("")
    logp, n, state = scorer.score(start, " Hello,")
    assert n == 1 and state == ("hello",)
    assert logp == pytest.approx(model.log10_prob("hello", [BOS]) * math.log(10))
    assert scorer.score(start, " (laughs)") == (0.0, 0, start)  # an aside normalises to nothing
    assert scorer.end(state) == pytest.approx(model.log10_prob(EOS, ["hello"]) * math.log(10))
    assert scorer.start("Hello world") == ("world",)
    assert vocabulary_overlap(scorer, ["Hello there world"]) == pytest.approx(2 / 3)


# -- the command lines ------------------------------------------------------------------------

def test_build_command(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("Ahoj, světe!\nAhoj světe.\n\nDobrý den, světe\n", encoding="utf-8")
    listing = tmp_path / "train.tsv"
    listing.write_text("client_id\tpath\tsentence\nx\ta.mp3\tDobrý den.\n", encoding="utf-8")
    out = tmp_path / "lm" / "cs.arpa.gz"
    code = whisper_scratch(["lm", "build", "--text", str(text), "--text", str(listing), "--language", "cs",
                            "--order", "3", "--out", str(out), "--no-progress"])
    printed, err = capsys.readouterr()
    assert code == 0, err
    assert "read 4 sentences, 9 words (4 different) from 2 sources" in err
    assert f"wrote {out}: order 3, 1-grams 7, 2-grams" in printed
    model = read_arpa(out)
    assert model.vocabulary() == {"ahoj", "světe", "dobrý", "den"}  # lowercased, punctuation gone
    assert whisper_scratch(["lm", "info", str(out)]) == 0
    assert "order 3" in capsys.readouterr().out


@pytest.mark.parametrize("args, needles", [
    (["--text", "{tmp}/missing.txt"], ["missing.txt", "not found"]),
    (["--text", "{tmp}/t.txt", "--order", "0"], ["--order"]),
    (["--text", "{tmp}/t.txt", "--prune", "1"], ["unigrams cannot be pruned"]),
    (["--text", "{tmp}/t.txt", "--prune", "0", "2", "1"], ["non-decreasing"]),
    (["--text", "{tmp}/punct.txt"], ["no words"]),
])
def test_build_command_bad_input(tmp_path, capsys, args, needles):
    (tmp_path / "t.txt").write_text("a b c\n")
    (tmp_path / "punct.txt").write_text("(laughs) [music] !!!\n")
    argv = ["build", "--language", "en", "--out", str(tmp_path / "lm.arpa"), "--no-progress",
            *[a.format(tmp=tmp_path) for a in args]]
    from whisper_scratch.lm.command import main

    assert main(argv) == 2
    one_error_line(capsys.readouterr().err, *needles)
    assert not (tmp_path / "lm.arpa").exists()


@pytest.mark.parametrize("args, needles", [
    (["--lm", "{tmp}/lm.arpa"], ["--lm", "--beam_size 5"]),
    (["--lm", "{tmp}/none.arpa", "--beam_size", "5"], ["none.arpa", "not found", "lm build"]),
    (["--lm", "{tmp}/corrupt.arpa", "--beam_size", "5"], ["corrupt.arpa", "not an ARPA"]),
    (["--lm", "{tmp}/empty.arpa", "--beam_size", "5"], ["empty.arpa", "empty file"]),
    (["--lm_alpha", "0.3"], ["--lm_alpha", "--lm LM.arpa"]),
])
def test_transcribe_lm_bad_input(tmp_path, capsys, args, needles):
    write_arpa(build([["a"]], 2), tmp_path / "lm.arpa")
    (tmp_path / "corrupt.arpa").write_text("this is not a model\n")
    (tmp_path / "empty.arpa").write_bytes(b"")
    argv = ["--model_path", str(tmp_path / "no-model"), "--audio_path", str(tmp_path / "a.wav"),
            *[a.format(tmp=tmp_path) for a in args]]
    assert transcribe.main(argv) == 2
    one_error_line(capsys.readouterr().err, *needles)


# -- real weights -----------------------------------------------------------------------------

JFK_LM = ["and so my fellow americans ask not what your country can do for you",
          "ask what you can do for your country"]


@pytest.fixture(scope="module")
def jfk_lm(tmp_path_factory) -> Path:
    """An LM where the country is "our" country, never "your"."""
    text = [s.replace("your", "our").split() for s in JFK_LM] * 5 + [["our", "country"]] * 20
    return write_arpa(build(text, 3), tmp_path_factory.mktemp("lm") / "our.arpa")


@pytest.mark.shared
def test_an_lm_changes_a_real_transcript(shared_data, tiny_en_dir, jfk_lm, capsys):
    jfk = shared_data / "samples/jfk.flac"
    base = ["--model_path", str(tiny_en_dir), "--audio_path", str(jfk), "--beam_size", "5"]
    assert transcribe.main(base) == 0
    plain = capsys.readouterr().out
    assert "for your country" in plain
    assert transcribe.main([*base, "--lm", str(jfk_lm), "--lm_alpha", "0", "--lm_beta", "0"]) == 0
    assert capsys.readouterr().out == plain
    assert transcribe.main([*base, "--lm", str(jfk_lm), "--lm_alpha", "2", "--lm_beta", "3"]) == 0
    fused = capsys.readouterr().out
    assert "your country" not in fused and fused.count("our country") == 2, fused


@pytest.mark.shared
@pytest.mark.parametrize("how", [["--clip_timestamps", "0,11"], ["--batched"]])
def test_long_form_and_batched_take_an_lm(shared_data, tiny_en_dir, jfk_lm, capsys, how):
    # jfk.flac through the window-by-window path (--clip_timestamps sends any file there) and the
    # VAD-batched one; that the text so far is the next window's LM history is tested above.
    argv = ["--model_path", str(tiny_en_dir), "--audio_path", str(shared_data / "samples/jfk.flac"),
            "--beam_size", "5", "--lm", str(jfk_lm), "--lm_alpha", "2", "--lm_beta", "2", *how]
    assert transcribe.main(argv) == 0
    out = capsys.readouterr().out
    assert "ask not what our country" in out, out


# -- tuning lm_alpha and lm_beta ----------------------------------------------------------------

def bowl(best_alpha: float, best_beta: float):
    """A trial whose WER is a bowl around (best_alpha, best_beta), recording the points run."""
    seen = []

    def run(alpha: float, beta: float) -> Trial:
        seen.append((alpha, beta))
        return Trial(alpha, beta, (alpha - best_alpha) ** 2 + (beta - best_beta) ** 2, 0.0, 0.0)
    return run, seen


def test_pattern_search_walks_to_the_best_pair_within_its_budget():
    run, seen = bowl(0.5, 3.0)
    trials = search(run, ALPHAS, BETAS, budget=40)
    assert best_trial(trials).alpha == 0.5 and best_trial(trials).beta == 3.0
    assert seen[0] == (ALPHAS[3], BETAS[3])  # the middle of the grid first
    assert len(seen) == len(set(seen)) < len(ALPHAS) * len(BETAS)  # no pair twice, fewer than the grid
    run, seen = bowl(0.5, 3.0)
    assert len(search(run, ALPHAS, BETAS, budget=3)) == 3
    run, seen = bowl(0.5, 3.0)
    assert len(search(run, ALPHAS, BETAS, budget=100, whole_grid=True)) == len(ALPHAS) * len(BETAS)
    assert seen[:2] == [(ALPHAS[0], BETAS[0]), (ALPHAS[0], BETAS[1])]  # row by row


def clips_folder(tmp_path: Path, model: Whisper, n: int = 5) -> list[Utterance]:
    """n clips of noise that fit the random model's window, listed with a reference each."""
    rng = np.random.default_rng(0)
    samples = window_frames(model.dims.n_audio_ctx) * HOP_LENGTH
    rows = []
    for i in range(n):
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(samples // 2 + 100 * i)).astype(np.float32), SAMPLE_RATE)
        rows.append(Utterance(path, "w1 w2 w3", "en"))
    return rows


def test_dev_split_encodes_once_and_decodes_as_a_fresh_run(tmp_path):
    model, _ = random_model()
    rows = clips_folder(tmp_path, model)
    lm = NgramScorer(build(random_corpus(50), 3), word_splitter("en"))
    options = tuning.default_options("en", beam_size=3, batch_size=2)
    dev = tuning.DevSplit(LoadedModel.wrap(model), rows, "en", options)
    encoder_calls = []
    embed = model.embed_audio
    model.embed_audio = lambda *a, **k: encoder_calls.append(1) or embed(*a, **k)
    first = dev.trial(None, 0.0, 0.0)
    assert len(encoder_calls) == 3 and len(dev.encoded) == len(rows)  # batches of 2, 2 and 1
    cached = dev.trial(lm, 2.0, 1.0)
    assert len(encoder_calls) == 3  # the second trial only decodes
    fresh = tuning.DevSplit(LoadedModel.wrap(model), rows, "en", options).trial(lm, 2.0, 1.0)
    assert (cached.wer, cached.cer) == (fresh.wer, fresh.cer)
    assert not first.fused and cached.fused


def test_tune_command_bad_input(tmp_path, capsys):
    from whisper_scratch.lm.command import main

    write_arpa(build([["a"]], 2), tmp_path / "lm.arpa")
    (tmp_path / "dev.jsonl").write_text('{"audio": "a.wav", "text": "a"}\n')
    base = ["tune", "--model_path", str(tmp_path / "no-model"), "--manifest", str(tmp_path / "dev.jsonl")]
    cases = [
        (["--lm", str(tmp_path / "lm.arpa"), "--alphas", "0.5", "0.1"], ["--alphas", "ascending"]),
        (["--lm", str(tmp_path / "lm.arpa"), "--alphas", "-1", "0"], ["--alphas", "negative"]),
        (["--lm", str(tmp_path / "lm.arpa"), "--budget", "0"], ["--budget"]),
        (["--lm", str(tmp_path / "lm.arpa"), "--save"], ["--save", "checkpoint folder"]),
        (["--lm", str(tmp_path / "missing.arpa")], ["missing.arpa", "not found"]),
        (["--lm", str(tmp_path / "lm.arpa")], ["no-model"]),
    ]
    for args, needles in cases:
        assert main([*base, *args]) == 2
        one_error_line(capsys.readouterr().err, *needles)


@pytest.mark.shared
def test_tune_finds_the_pair_and_transcribe_uses_it(shared_data, tiny_en_dir, jfk_lm, tmp_path, capsys):
    """On a one-clip "dev split" whose reference says "our country": the tuned pair is the one that
    makes the LM win, its WER is exactly what transcribe.py --mode evaluate gives with those
    flags, and --save makes transcribe.py --lm use it."""
    model = tmp_path / "model"
    shutil.copytree(tiny_en_dir, model)
    dev = tmp_path / "dev.jsonl"
    reference = " ".join(JFK_LM).replace("your", "our")
    dev.write_text(json.dumps({"audio": str(shared_data / "samples/jfk.flac"), "text": reference}) + "\n")
    report = tmp_path / "tune.json"
    from whisper_scratch.lm.command import main

    assert main(["tune", "--model_path", str(model), "--lm", str(jfk_lm), "--manifest", str(dev), "--alphas", "0.5",
                 "2", "--betas", "0", "3", "--grid", "--output", str(report), "--save"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1] == "--lm_alpha 2 --lm_beta 3"
    tuned = json.loads(report.read_text())
    assert tuned["baseline"]["wer"] > 0 and tuned["best"]["wer"] == 0.0
    for trial in [tuned["baseline"], *tuned["trials"]]:
        weights = ["--lm", str(jfk_lm), "--lm_alpha", str(trial["alpha"]), "--lm_beta", str(trial["beta"])]
        assert transcribe.main(["--model_path", str(model), "--mode", "evaluate", "--manifest", str(dev),
                                "--beam_size", "5", "--output_file", str(tmp_path / "e.json"),
                                *(weights if trial["fused"] else [])]) == 0
        assert json.loads((tmp_path / "e.json").read_text())["wer"] == trial["wer"]
    capsys.readouterr()
    assert transcribe.main(["--model_path", str(model), "--audio_path", str(shared_data / "samples/jfk.flac"),
                            "--beam_size", "5", "--lm", str(jfk_lm)]) == 0
    out, err = capsys.readouterr()
    assert "our country" in out and "your" not in out
    assert "--lm_alpha 2 --lm_beta 3: tuned for this model" in err


# -- train.py --eval-lm ---------------------------------------------------------------------------

def test_train_evaluates_with_the_lm(tmp_path, capsys):
    from test_train import ASTERISK, asterisk_args, trainer_for

    from whisper_scratch.cli import train
    from whisper_scratch.training.loop import eval_options, evaluate

    lm = tmp_path / "asterisk.arpa"
    assert whisper_scratch(["lm", "build", "--text", str(ASTERISK), "--language", "en", "--order", "3",
                            "--out", str(lm), "--no-progress"]) == 0
    out = tmp_path / "run"
    args = asterisk_args(out, 2, "--eval-lm", str(lm), "--eval-lm-alpha", "0", "--eval-lm-beta", "0",
                         "--eval-beam-size", "3", "--eval-every", "1000")
    trainer = trainer_for(args)
    options = eval_options(trainer.model, trainer.cfg, trainer.eval_lm)
    assert options.beam_size == 3 and options.lm is trainer.eval_lm and options.lm_alpha == 0.0
    assert eval_options(trainer.model, trainer.cfg).beam_size is None  # greedy without --eval-lm
    # Zero weights: the fused evaluation is the plain beam search's.
    fused = evaluate(trainer.model, trainer.tokenizer, trainer.data, trainer.cfg, lm=trainer.eval_lm)
    plain = evaluate(trainer.model, trainer.tokenizer, trainer.data, trainer.cfg,
                     lm=NgramScorer(build([["unrelated"]], 2), word_splitter("en")))
    assert fused["pairs"] == plain["pairs"]
    assert train.main(args) == 0
    assert [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "eval_wer" in line]
    capsys.readouterr()
    (tmp_path / "bad.arpa").write_text("not a model\n")
    bad = asterisk_args(tmp_path / "run2", 2, "--eval-lm", str(tmp_path / "bad.arpa"))
    assert train.main(bad) == 2
    one_error_line(capsys.readouterr().err, "--eval-lm", "bad.arpa", "not an ARPA")


# -- KenLM as the query backend ------------------------------------------------------------------

def kenlm_module():
    """kenlm, which CI installs (requirements-test.txt); elsewhere a skip when it is missing."""
    if os.environ.get("WHISPER_SCRATCH_SHARED") == "1":
        import kenlm
        return kenlm
    return pytest.importorskip("kenlm")


def test_our_arpa_reader_agrees_with_kenlm(tmp_path):
    kenlm = kenlm_module()
    model = build(random_corpus(300), 4, prune=(0, 0, 1))
    path = write_arpa(model, tmp_path / "lm.arpa")
    theirs = kenlm.Model(str(path))
    ours = read_arpa(path)
    rng = random.Random(1)
    sentences = random_corpus(40, seed=7) + [[f"w{rng.randrange(120)}" for _ in range(6)] for _ in range(20)]
    for sentence in sentences:  # seen and unseen words and n-grams, <unk> included (w100 and up)
        history = [BOS]
        expected = [score for score, _, _ in theirs.full_scores(" ".join(sentence), bos=True, eos=True)]
        got = []
        for word in [*sentence, EOS]:
            got.append(ours.log10_prob(word, history))
            history.append(word)
        assert got == pytest.approx(expected, abs=2e-6)  # KenLM keeps float32


def test_kenlm_scorer_gives_the_python_scorers_scores(tmp_path):
    kenlm_module()
    path = write_arpa(build(random_corpus(300), 3), tmp_path / "lm.arpa")
    python, kenlm = (scorer_for(read_lm(path, backend), "en") for backend in ("python", "kenlm"))
    for context in ("", "w1 w2", "w5 w9 w17 w3"):
        a, b = python.start(context), kenlm.start(context)
        for text in (" w3", " w3 w8", " w120", " (laughs)"):
            (pa, na, a2), (pb, nb, b2) = python.score(a, text), kenlm.score(b, text)
            assert na == nb and pa == pytest.approx(pb, abs=1e-5)
            assert python.end(a2) == pytest.approx(kenlm.end(b2), abs=1e-5)
    assert [python.knows(w) for w in ("w3", "w999")] == [kenlm.knows(w) for w in ("w3", "w999")] == [True, False]
    # Fused into beam search, the two backends choose the same tokens.
    model, features = random_model()
    options = DecodingOptions(language="en", beam_size=4, without_timestamps=True)
    by = [[r.tokens for r in decode(model, features, replace(options, lm=s, lm_alpha=1.0, lm_beta=0.5))]
          for s in (python, kenlm)]
    assert by[0] == by[1]


def test_kenlm_backend_bad_input(tmp_path, capsys):
    kenlm_module()
    (tmp_path / "corrupt.arpa").write_text("this is not a model\n")
    with pytest.raises(ArpaError, match="corrupt.arpa"):
        read_lm(tmp_path / "corrupt.arpa", "kenlm")
    with pytest.raises(ArpaError, match="not found"):
        read_lm(tmp_path / "none.arpa", "kenlm")
    assert transcribe.main(["--model_path", str(tmp_path / "m"), "--audio_path", str(tmp_path / "a.wav"),
                            "--lm_backend", "kenlm"]) == 2
    one_error_line(capsys.readouterr().err, "--lm_backend", "--lm LM.arpa")


def test_lm_errors_sorts_every_edit_into_one_kind(tmp_path, capsys):
    """bench/lm_errors.py (docs/lm.md's errors by kind): each kind on a case made for it, and the
    edits of a report add up to its word errors as WER counts them."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        import lm_errors
    finally:
        sys.path.pop(0)
    assert lm_errors.substitution_kind("vidím", "vidim") == "diacritics"
    assert lm_errors.substitution_kind("koníka", "koník") == "word form"
    assert lm_errors.substitution_kind("vidíš", "vydíš") == "spelling"
    assert lm_errors.substitution_kind("pes", "kočka") == "other"
    assert lm_errors.substitution_kind("toho", "to") == "other"
    assert lm_errors.word_errors("a b c", "a x c d") == [("other", "b", "x"), ("inserted", "", "d")]
    assert lm_errors.word_errors("a b", "") == [("deleted", "a", ""), ("deleted", "b", "")]
    utterances = [{"reference": "Vidíš toho koníka?", "hypothesis": "Vydíš to hokolika."},
                  {"reference": "Ach jo, zase se někde potopila loď.", "hypothesis": "A zase se někde potopil loď."},
                  {"reference": "[hluk]", "hypothesis": "ano"}]
    report = {"utterances": utterances}
    model = build([s.split() for s in ("vidíš toho koníka", "zase se někde")], 2)
    analysis = lm_errors.analyse(report, "cs", model.vocabulary())
    hypotheses = [u["hypothesis"] for u in utterances]
    expected = utterance_word_errors([u["reference"] for u in utterances], hypotheses, "cs")
    assert analysis["errors"] == sum(e for e, _ in expected) == sum(analysis["kinds"].values())
    assert analysis["words"] == sum(n for _, n in expected)
    # vidíš/vydíš is one letter of five; toho/to and ach/a are two letters of short words: other.
    assert analysis["kinds"] == {"deleted": 1, "inserted": 1, "diacritics": 0, "word form": 1, "spelling": 1, "other": 3}
    assert analysis["unknown_to_lm"] == 3  # ach, jo, potopila; the LM knows vidíš, toho, koníka
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    write_arpa(model, tmp_path / "lm.arpa")
    assert lm_errors.main([str(path), "--language", "cs", "--lm", str(tmp_path / "lm.arpa"), "--sample", "3",
                           "--json", str(tmp_path / "out.json")]) == 0
    assert "| report.json | 10 | 7 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "out.json").read_text())[str(path)]["kinds"] == analysis["kinds"]
