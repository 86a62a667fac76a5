"""Tests for whisper_scratch.data and whisper_scratch.augment on the fixtures in tests/data
(asterisk16: 16 English clips; cv_tiny: a Common Voice-style Czech folder)."""
import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from whisper_scratch.audio.geometry import N_FRAMES, SAMPLE_RATE
from whisper_scratch.audio.noise import fit_length, mix_at_snr, pink_noise, trim_silence, white_noise
from whisper_scratch.data.manifest import Utterance
from whisper_scratch.data.splits import DataConfig, DataError, load_utterances, normalize_transcript
from whisper_scratch.tokenizer import SentencePieceWhisperTokenizer, get_tokenizer, train_sentencepiece
from whisper_scratch.training.augment import Augment, AugmentConfig
from whisper_scratch.training.dataset import (
    IGNORE_INDEX,
    Batch,
    Example,
    ResumableBatchSampler,
    Skipped,
    SpeechDataset,
    collate,
)

DATA = Path(__file__).parent / "data"
ASTERISK = DATA / "asterisk16"
CV_TINY = DATA / "cv_tiny"
CZECH_CHARS = "aábcčdďeéěfghiíjklmnňoópqrřsštťuúůvwxyýzž '"


def _snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """20·log10 of the RMS ratio of `signal` to `noise`."""
    power = [np.mean(np.square(x, dtype=np.float64)) for x in (signal, noise)]
    return float(10 * np.log10(power[0] / power[1]))


@pytest.fixture(scope="module")
def asterisk() -> list[Utterance]:
    return load_utterances(DataConfig(train_manifest=ASTERISK / "manifest.jsonl"), "train")[0]


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory, asterisk) -> Path:
    return train_sentencepiece([u.text for u in asterisk], tmp_path_factory.mktemp("spm") / "spm", vocab_size=320)


def _write_cv_rows(tsv: Path, rows: list[dict[str, str]]) -> None:
    """Append rows to a Common Voice .tsv, filling the other columns with blanks."""
    with tsv.open(encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
    with tsv.open("a", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, header, delimiter="\t", quoting=csv.QUOTE_NONE, restval="", lineterminator="\n")
        writer.writerows({"locale": "cs", **row} for row in rows)


# --- utterance lists ---------------------------------------------------------------------------

def test_fixtures_are_complete():
    rows = [json.loads(line) for line in (ASTERISK / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and len({r["text"] for r in rows}) == 16
    for row in rows:
        info = sf.info(ASTERISK / row["audio"])
        assert info.duration <= 3.0 and row["language"] == "en"
    demos = (DATA / "asterisk-demo", DATA / "cs-demo")  # run.sh's demo data, not test fixtures
    sizes = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file() and not set(demos) & set(p.parents))
    assert sizes < 2_000_000
    for demo in demos:
        assert sum(p.stat().st_size for p in demo.rglob("*") if p.is_file()) < 6_500_000


def test_common_voice_folder_splits():
    cfg = DataConfig(local_data_dir=CV_TINY)
    train, counts = load_utterances(cfg, "train")
    dev, _ = load_utterances(cfg, "eval")
    test, _ = load_utterances(DataConfig(local_data_dir=CV_TINY, eval_split="test"), "eval")
    assert (len(train), len(dev), len(test)) == (8, 4, 4)
    assert counts == {"rows": 8, "kept": 8}
    assert train[0] == Utterance(CV_TINY / "clips" / "fillets_cs_airplane_let-m-divna.mp3", "Co je to za divnou loď?", "cs")
    assert all(u.audio.is_file() and u.language == "cs" for u in train + dev + test)
    assert not {u.audio for u in train} & {u.audio for u in dev}
    # An explicit language overrides the rows' locale; a manifest wins over the folder.
    assert {u.language for u in load_utterances(DataConfig(local_data_dir=CV_TINY, language="sk"), "train")[0]} == {"sk"}
    both = DataConfig(local_data_dir=CV_TINY, train_manifest=ASTERISK / "manifest.jsonl")
    assert len(load_utterances(both, "train")[0]) == 16


def test_folder_of_audio_with_txt(tmp_path):
    for name, text in [("a", "Hello world."), ("b", "  Do not\tdisturb. ")]:
        shutil.copy(ASTERISK / "audio" / "hello-world.flac", tmp_path / f"{name}.flac")
        (tmp_path / f"{name}.txt").write_text(text)
    shutil.copy(ASTERISK / "audio" / "conf-full.flac", tmp_path / "no_transcript.flac")
    utts, counts = load_utterances(DataConfig(train_manifest=tmp_path), "train")
    assert [u.text for u in utts] == ["Hello world.", "Do not disturb."]  # whitespace collapsed
    assert counts["kept"] == 2


@pytest.mark.parametrize("text, keep, expected", [
    ("Co je to za divnou loď?", CZECH_CHARS, "co je to za divnou loď"),
    ("Chceš  říci: amfórství.", CZECH_CHARS, "chceš říci amfórství"),
    ("Call-Forward on No Answer.", "abcdefghijklmnopqrstuvwxyz ", "callforward on no answer"),
    ("Call-Forward on No Answer.", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz ", "CallForward on No Answer"),
    ("Press 9 , then # !", "abcdefghijklmnopqrstuvwxyz0123456789 ", "press 9 then"),
    ("two words", "abcdefghijklmnopqrstuvwxyz", "two words"),  # whitespace separates words even without " "
    ("lod\u030c", CZECH_CHARS, "loď"),  # decomposed input matches the composed set
    ("?! …", CZECH_CHARS, ""),
])
def test_normalize_transcript(text, keep, expected):
    assert normalize_transcript(text, keep) == expected


def test_keep_chars_on_common_voice():
    utts, counts = load_utterances(DataConfig(local_data_dir=CV_TINY, keep_chars=CZECH_CHARS), "train")
    assert utts[0].text == "co je to za divnou loď" and utts[3].text == "chceš říci amfórství"
    assert all(set(u.text) <= set(CZECH_CHARS) for u in utts)
    assert counts["kept"] == 8 and counts["empty_after_keep_chars"] == 0


def test_missing_sources_raise_one_line_errors(tmp_path):
    with pytest.raises(DataError, match=r"nope\.tsv: file not found"):
        load_utterances(DataConfig(local_data_dir=CV_TINY, eval_split="nope"), "eval")
    with pytest.raises(ValueError, match="'train' or 'eval'"):
        load_utterances(DataConfig(local_data_dir=CV_TINY), "dev")
    with pytest.raises(DataError, match="manifest not found"):
        load_utterances(DataConfig(train_manifest=tmp_path / "missing.jsonl"), "train")
    with pytest.raises(DataError, match="set eval_manifest or local_data_dir"):
        load_utterances(DataConfig(train_manifest=ASTERISK / "manifest.jsonl"), "eval")
    with pytest.raises(DataError, match="no audio file with a same-named .txt"):
        load_utterances(DataConfig(train_manifest=tmp_path), "train")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match=r"empty.jsonl: empty jsonl"):
        load_utterances(DataConfig(train_manifest=tmp_path / "empty.jsonl"), "train")


def test_bad_data_set(tmp_path):
    """A Common Voice folder with a missing clip, a corrupt and an empty mp3, a transcript of excluded
    characters only, and an empty dev.tsv."""
    cv = tmp_path / "cv"
    shutil.copytree(CV_TINY, cv)
    (cv / "clips" / "corrupt.mp3").write_bytes(b"this is not an mp3 file\n" * 50)
    (cv / "clips" / "empty.mp3").write_bytes(b"")
    _write_cv_rows(cv / "train.tsv", [
        {"path": "missing.mp3", "sentence": "Tahle nahrávka chybí."},
        {"path": "corrupt.mp3", "sentence": "Tahle je rozbitá."},
        {"path": "empty.mp3", "sentence": "Tahle je prázdná."},
        {"path": "fillets_cs_airplane_let-m-divna.mp3", "sentence": "?! … — 123"},
    ])
    dev = cv / "dev.tsv"
    dev.write_text(dev.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    cfg = DataConfig(local_data_dir=cv, keep_chars=CZECH_CHARS)

    utts, counts = load_utterances(cfg, "train")
    assert counts == {"rows": 12, "kept": 11, "empty_after_keep_chars": 1}
    dataset = SpeechDataset(utts, get_tokenizer(True), language="cs")
    items = {Path(item.path).name: item for item in (dataset[i] for i in range(len(dataset)))}
    for name, reason in [("missing.mp3", "audio file not found"), ("corrupt.mp3", "cannot decode"),
                         ("empty.mp3", "empty audio file")]:
        assert isinstance(items[name], Skipped) and reason in items[name].reason and name in items[name].reason
        assert "\n" not in items[name].reason
    assert sum(isinstance(item, Example) for item in items.values()) == 8

    with pytest.raises(DataError, match=r"dev\.tsv: empty tsv") as err:
        load_utterances(cfg, "eval")
    assert str(dev) in str(err.value)
    only_excluded = cv / "only_excluded.tsv"
    only_excluded.write_text(dev.read_text(encoding="utf-8"), encoding="utf-8")
    _write_cv_rows(only_excluded, [{"path": f"x{i}.mp3", "sentence": "?!…"} for i in range(12)])
    with pytest.raises(DataError, match="only_excluded.tsv: 0 usable rows: 12 rows had only characters outside --keep-chars"):
        load_utterances(DataConfig(local_data_dir=cv, eval_split="only_excluded", keep_chars=CZECH_CHARS), "eval")


def test_duration_limits(tmp_path, asterisk):
    clips = [sf.read(u.audio, dtype="float32") for u in asterisk]
    assert {sr for _, sr in clips} == {8000}
    long = np.concatenate([audio for audio, _ in clips])
    assert len(long) / 8000 > 30.0
    sf.write(tmp_path / "long.flac", long, 8000)
    utts = [Utterance(tmp_path / "long.flac", "A long one."), asterisk[0]]
    items = [SpeechDataset(utts, get_tokenizer(False), max_duration=60.0)[i] for i in range(2)]
    assert isinstance(items[0], Skipped) and "too long" in items[0].reason and "30 s" in items[0].reason
    assert isinstance(items[1], Example)
    short = SpeechDataset(utts[1:], get_tokenizer(False), min_duration=2.0)[0]  # hello-world is 1.4 s
    assert isinstance(short, Skipped) and "too short" in short.reason
    # A model with a shorter encoder window (from scratch): its window is the limit.
    small = SpeechDataset(utts[1:], get_tokenizer(False), n_frames=100)
    assert small.max_duration == 1.0 and isinstance(small[0], Skipped)
    assert SpeechDataset(utts[1:], get_tokenizer(False), n_frames=200)[0].mel.shape == (80, 200)


# --- tokens and labels -------------------------------------------------------------------------

def _check_layout(example: Example, prefix: list[int], text_ids: list[int], eot: int) -> None:
    assert example.tokens.tolist() == prefix + text_ids
    assert example.labels.tolist() == prefix[1:] + text_ids + [eot]
    assert example.tokens.dtype == example.labels.dtype == torch.long


def test_tokens_english_only(asterisk):
    tok = get_tokenizer(False)
    example = SpeechDataset(asterisk, tok, language="en")[0]
    assert example.mel.shape == (80, N_FRAMES) and example.path == str(asterisk[0].audio)
    _check_layout(example, [tok.sot, tok.no_timestamps], tok.encode(" " + asterisk[0].text), tok.eot)
    assert tok.decode(example.labels.tolist()) == " " + asterisk[0].text


def test_tokens_multilingual():
    utts, _ = load_utterances(DataConfig(local_data_dir=CV_TINY), "train")
    tok = get_tokenizer(True)
    dataset = SpeechDataset(utts, tok, n_mels=128, task="translate")
    example = dataset[0]
    assert example.mel.shape == (128, N_FRAMES)
    _check_layout(example, [tok.sot, tok.to_language_token("cs"), tok.translate, tok.no_timestamps],
                  tok.encode(" Co je to za divnou loď?"), tok.eot)
    # A Common Voice locale with a region maps to its language; a language set on the dataset wins.
    located = SpeechDataset([Utterance(utts[0].audio, "x", "sv-SE")], tok)
    assert located.prefix_ids[0][1] == tok.to_language_token("sv")
    assert SpeechDataset(utts[:1], tok, language="Slovak").prefix_ids[0][1] == tok.to_language_token("sk")
    with pytest.raises(DataError, match="needs a language"):
        SpeechDataset([Utterance(utts[0].audio, "x")], tok)
    with pytest.raises(DataError, match="'xx' is not in this tokenizer"):
        SpeechDataset([Utterance(utts[0].audio, "x", "xx")], tok)


def test_tokens_sentencepiece(asterisk, spm_model):
    with_lang = SentencePieceWhisperTokenizer(spm_model, ("en",))
    example = SpeechDataset(asterisk, with_lang, language="en")[1]
    _check_layout(example, [with_lang.sot, with_lang.to_language_token("en"), with_lang.transcribe,
                            with_lang.no_timestamps], with_lang.encode(asterisk[1].text), with_lang.eot)
    assert with_lang.decode(example.labels.tolist()) == " " + asterisk[1].text
    no_lang = SentencePieceWhisperTokenizer(spm_model)
    _check_layout(SpeechDataset(asterisk, no_lang)[1], [no_lang.sot, no_lang.no_timestamps],
                  no_lang.encode(asterisk[1].text), no_lang.eot)


def test_too_many_label_tokens_is_skipped(asterisk):
    tok = get_tokenizer(False)
    n = len(tok.encode(" " + asterisk[0].text)) + 2  # + sot, notimestamps
    assert isinstance(SpeechDataset(asterisk[:1], tok, max_label_tokens=n)[0], Example)
    skipped = SpeechDataset(asterisk[:1], tok, max_label_tokens=n - 1)[0]
    assert isinstance(skipped, Skipped) and f"{n} tokens > {n - 1}" in skipped.reason


# --- collate -----------------------------------------------------------------------------------

def test_collate_pads_and_reports_skipped(asterisk):
    tok = get_tokenizer(False)
    dataset = SpeechDataset(asterisk, tok)
    short, long = dataset[0], dataset[2]  # "Hello world." and a longer prompt
    gone = Skipped("gone.flac", "audio file not found: gone.flac (check the path)")
    batch = collate([short, gone, long])
    assert isinstance(batch, Batch) and len(batch) == 2
    T = len(long.tokens)
    assert len(short.tokens) < T
    assert batch.mel.shape == (2, 80, N_FRAMES) and batch.tokens.shape == batch.labels.shape == (2, T)
    assert batch.paths == [short.path, long.path] and batch.skipped == [gone]
    n = len(short.tokens)
    assert batch.tokens[0, :n].tolist() == short.tokens.tolist() and (batch.tokens[0, n:] == tok.eot).all()
    assert batch.labels[0, :n].tolist() == short.labels.tolist() and (batch.labels[0, n:] == IGNORE_INDEX).all()
    assert torch.equal(batch.tokens[1], long.tokens) and torch.equal(batch.labels[1], long.labels)
    assert torch.equal(batch.mel[0], short.mel)

    empty = collate([gone, gone])
    assert len(empty) == 0 and empty.skipped == [gone, gone]
    assert empty.mel.shape == (0, 0, 0) and empty.tokens.shape == empty.labels.shape == (0, 0)
    assert len(collate([])) == 0


# --- sampler -----------------------------------------------------------------------------------

def _epoch(sampler: ResumableBatchSampler) -> list[list[int]]:
    """Iterate one epoch, consuming every batch the way a trainer does."""
    batches = []
    for batch in sampler:
        batches.append(batch)
        sampler.advance()
    return batches


@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_epochs(drop_last):
    sampler = ResumableBatchSampler(10, 4, shuffle=True, seed=3, drop_last=drop_last)
    first = _epoch(sampler)
    assert len(first) == len(sampler) == (2 if drop_last else 3)
    assert [len(b) for b in first] == ([4, 4] if drop_last else [4, 4, 2])
    flat = [i for b in first for i in b]
    assert len(set(flat)) == len(flat) and (drop_last or sorted(flat) == list(range(10)))
    assert flat == sampler.epoch_order(0).tolist()[: len(flat)]
    assert list(sampler) == []  # the epoch is used up until set_epoch moves on
    sampler.set_epoch(1)
    second = _epoch(sampler)
    assert second != first
    assert _epoch(ResumableBatchSampler(10, 4, shuffle=True, seed=3, drop_last=drop_last)) == first
    assert _epoch(ResumableBatchSampler(10, 4, shuffle=False)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_sampler_resume_matches_uninterrupted_run():
    def run(resume_after: int | None) -> list[list[int]]:
        sampler = ResumableBatchSampler(23, 3, shuffle=True, seed=11)
        seen = []
        for epoch in range(sampler.epoch, 3):
            sampler.set_epoch(epoch)
            for batch in sampler:
                seen.append(batch)
                sampler.advance()
                if len(seen) == resume_after:
                    state = sampler.state_dict()
                    resumed = ResumableBatchSampler(23, 3, shuffle=True, seed=11)
                    resumed.load_state_dict(state)
                    # A fresh run's loop, from the saved position.
                    for epoch2 in range(resumed.epoch, 3):
                        resumed.set_epoch(epoch2)
                        for batch2 in resumed:
                            seen.append(batch2)
                            resumed.advance()
                    return seen
        return seen

    full = run(None)
    assert len(full) == 3 * 8
    for k in (1, 5, 8, 9, 23):  # mid-epoch, at an epoch's end, just after it, one batch before the end
        assert run(k) == full


def test_sampler_prefetching_does_not_move_the_position():
    sampler = ResumableBatchSampler(12, 2, seed=0)
    it = iter(sampler)
    fetched = [next(it) for _ in range(4)]  # what DataLoader workers might have prefetched
    sampler.advance(2)  # but only two were trained on
    resumed = ResumableBatchSampler(12, 2, seed=0)
    resumed.load_state_dict(sampler.state_dict())
    assert next(iter(resumed)) == fetched[2]


def test_sampler_state_must_fit():
    state = ResumableBatchSampler(12, 2, seed=0).state_dict()
    with pytest.raises(ValueError, match="global_batch_size"):
        ResumableBatchSampler(12, 3, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        ResumableBatchSampler(12, 2, seed=1).load_state_dict(state)
    # Same global batch over two ranks: fine.
    ResumableBatchSampler(12, 1, seed=0, rank=1, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="past the end"):
        ResumableBatchSampler(2, 2).advance(2)


@pytest.mark.parametrize("n, drop_last", [(29, False), (29, True), (32, False)])
def test_sampler_ranks_split_the_global_batch(n, drop_last):
    single = _epoch(ResumableBatchSampler(n, 8, seed=5, drop_last=drop_last))
    ranks = [ResumableBatchSampler(n, 4, seed=5, drop_last=drop_last, rank=r, world_size=2) for r in range(2)]
    per_rank = [_epoch(s) for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(single) == len(ranks[0])
    for b, batch in enumerate(single):
        assert per_rank[0][b] + per_rank[1][b] == batch  # contiguous slices, rank order
    if n == 29 and not drop_last:
        assert [len(per_rank[0][-1]), len(per_rank[1][-1])] == [4, 1]
    # Resuming on two ranks from a one-rank checkpoint continues the same global order.
    one = ResumableBatchSampler(n, 8, seed=5, drop_last=drop_last)
    one.advance(2)
    two = ResumableBatchSampler(n, 4, seed=5, drop_last=drop_last, rank=1, world_size=2)
    two.load_state_dict(one.state_dict())
    assert list(two) == per_rank[1][2:]


# --- augmentation ------------------------------------------------------------------------------

def test_mix_at_snr_is_exact():
    rng = np.random.default_rng(0)
    speech = 0.1 * np.sin(np.arange(16000) * 0.05).astype(np.float32)
    for snr in (-5.0, 0.0, 7.5, 20.0):
        noise = white_noise(5000, rng)  # shorter than speech: looped
        mixed = mix_at_snr(speech, noise, snr)
        assert mixed.dtype == np.float32 and mixed.shape == speech.shape
        assert abs(_snr_db(speech, mixed - speech) - snr) < 0.1
    # Loud enough to clip: both parts are scaled down together, the SNR stays.
    loud = 0.9 * np.sign(np.sin(np.arange(16000) * 0.05)).astype(np.float32)
    noise = pink_noise(16000, rng)
    mixed = mix_at_snr(loud, noise, 0.0)
    assert np.abs(mixed).max() <= 1.0 + 1e-6
    (a, b), *_ = np.linalg.lstsq(np.stack([loud, noise], axis=1).astype(np.float64), mixed.astype(np.float64), rcond=None)
    assert abs(_snr_db(a * loud, b * noise) - 0.0) < 0.1
    assert np.array_equal(mix_at_snr(np.zeros(100, np.float32), noise, 10.0), np.zeros(100, np.float32))


def test_fit_length():
    x = np.arange(5, dtype=np.float32)
    assert fit_length(x, 12).tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert fit_length(x, 3).tolist() == [0, 1, 2]
    cropped = fit_length(np.arange(100, dtype=np.float32), 10, np.random.default_rng(1))
    assert len(cropped) == 10 and np.all(np.diff(cropped) == 1)
    looped = fit_length(x, 12, np.random.default_rng(1))
    assert len(looped) == 12 and np.all(np.diff(looped) % 5 == 1)


def test_trim_silence():
    x = np.array([0, 1e-5, 0.5, 0, -0.2, 1e-5, 0], np.float32)
    assert trim_silence(x).tolist() == pytest.approx([0.5, 0, -0.2])
    assert len(trim_silence(np.zeros(10, np.float32))) == 0


def test_pink_noise_has_equal_power_per_octave():
    x = pink_noise(2**18, np.random.default_rng(0))
    assert x.dtype == np.float32 and abs(np.sqrt(np.mean(x.astype(np.float64) ** 2)) - 1) < 1e-3
    power = np.abs(np.fft.rfft(x)) ** 2
    octaves = [power[f:2 * f].sum() for f in (64, 512, 4096, 32768)]
    assert max(octaves) / min(octaves) < 1.3  # white noise would grow 8x per step


def test_spec_augment_stays_in_content_frames():
    aug = Augment(AugmentConfig(spec_augment=True))
    mel = torch.ones(80, N_FRAMES)
    out = aug.spec(mel, 500, np.random.default_rng(0))
    assert torch.equal(mel, torch.ones(80, N_FRAMES))  # input untouched
    assert (out[:, 500:] == 1).all() and (out[:, :500] == 0).any()
    zero_columns = int((out[:, :500] == 0).all(dim=0).sum())
    assert zero_columns <= 2 * 25  # two time masks of at most 5% of 500 frames
    assert torch.equal(Augment(AugmentConfig()).spec(mel, 500, np.random.default_rng(0)), mel)


def test_augmentation_is_reproducible(asterisk):
    aug = Augment(AugmentConfig(spec_augment=True, noise=True, noise_kind="pink", noise_prob=1.0))
    dataset = SpeechDataset(asterisk, get_tokenizer(False), augment=aug, seed=7)
    clean = SpeechDataset(asterisk, get_tokenizer(False))[3].mel
    dataset.set_epoch(2)
    a = dataset[3].mel
    assert torch.equal(a, dataset[3].mel) and not torch.equal(a, clean)
    other = SpeechDataset(asterisk, get_tokenizer(False), augment=aug, seed=7)
    other.set_epoch(2)
    assert torch.equal(other[3].mel, a)
    other.set_epoch(3)
    assert not torch.equal(other[3].mel, a)
    audio = np.full(1000, 0.1, np.float32)
    rng = np.random.default_rng([7, 2, 3])
    assert np.array_equal(aug(audio, rng), aug(audio, np.random.default_rng([7, 2, 3])))


def test_noise_dir(tmp_path, caplog):
    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    padding = np.zeros(4000, np.float32)  # 0.5 s of digital silence at each end, trimmed on load
    sf.write(noise_dir / "pink_8k.flac", np.concatenate([padding, 0.3 * pink_noise(16000, np.random.default_rng(0)),
                                                         padding]), 8000)
    (noise_dir / "broken.flac").write_bytes(b"not a flac" * 10)
    sf.write(noise_dir / "silent.flac", padding, 8000)
    aug = Augment(AugmentConfig(noise_dir=noise_dir, snr_range=(10.0, 10.0), noise_prob=1.0))
    assert aug.config.adds_noise
    with caplog.at_level(logging.WARNING, logger="whisper_scratch.audio.noise"):
        bank = aug.load_noise()
        aug.load_noise()
    assert len(bank) == 1 and 2 * SAMPLE_RATE <= len(bank[0]) < 2 * SAMPLE_RATE + 400  # 16 kHz; trimmed but for resampler ringing
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert len(caplog.records) == 2, messages  # each bad file reported once
    assert "cannot decode" in messages and "broken.flac" in messages and "silent.flac is silent" in messages
    speech = 0.1 * np.sin(np.arange(3 * SAMPLE_RATE) * 0.03).astype(np.float32)  # longer than the noise: looped
    noisy = aug(speech, np.random.default_rng(1))
    assert abs(_snr_db(speech, noisy - speech) - 10.0) < 0.1
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        Augment(AugmentConfig(noise_dir=tmp_path / "empty"))


def test_dataloader_workers_and_resume_give_identical_batches(asterisk):
    aug = Augment(AugmentConfig(spec_augment=True, noise=True, noise_kind="white"))
    dataset = SpeechDataset(asterisk, get_tokenizer(False), augment=aug, seed=1)

    def batches(num_workers: int, state: dict | None = None) -> list[Batch]:
        sampler = ResumableBatchSampler(len(dataset), 5, shuffle=True, seed=1)
        if state is not None:
            sampler.load_state_dict(state)
        sampler.set_epoch(1)
        dataset.set_epoch(1)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)
        out = []
        for batch in loader:
            out.append(batch)
            sampler.advance()
        return out

    serial, parallel = batches(0), batches(2)
    assert len(serial) == 4 and [len(b) for b in serial] == [5, 5, 5, 1]
    resumed = batches(2, {**ResumableBatchSampler(16, 5, seed=1).state_dict(), "epoch": 1, "batches_done": 2})
    for a, b in zip(serial, parallel):
        assert a.paths == b.paths and torch.equal(a.mel, b.mel)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.labels, b.labels)
    assert len(resumed) == 2
    for a, b in zip(serial[2:], resumed):
        assert a.paths == b.paths and torch.equal(a.mel, b.mel)


# --- real data (../shared) ---------------------------------------------------------------------

@pytest.mark.shared
def test_shared_fillets_common_voice(shared_data):
    cfg = DataConfig(local_data_dir=shared_data / "fillets-cv" / "cs", keep_chars=CZECH_CHARS)
    train, counts = load_utterances(cfg, "train")
    assert counts["rows"] == 1279 and len(train) == counts["kept"]
    assert counts["kept"] + counts["empty_after_keep_chars"] + counts["empty_transcript"] == 1279
    dev, _ = load_utterances(cfg, "eval")
    assert len(dev) == 156
    dataset = SpeechDataset(train, get_tokenizer(True), n_mels=80)
    example = dataset[0]
    assert isinstance(example, Example) and example.tokens[1] == get_tokenizer(True).to_language_token("cs")


@pytest.mark.shared
@pytest.mark.parametrize("split, n_files", [("train", 16), ("test", 7)])
def test_shared_noise_folders(shared_data, split, n_files, caplog):
    aug = Augment(AugmentConfig(noise_dir=shared_data / "noise" / split, noise_prob=1.0, snr_range=(5.0, 5.0)))
    with caplog.at_level(logging.WARNING, logger="whisper_scratch.audio.noise"):
        bank = aug.load_noise()
    assert len(bank) == n_files and not caplog.records
    speech = 0.1 * np.sin(np.arange(SAMPLE_RATE) * 0.03).astype(np.float32)
    for seed in range(5):
        noisy = aug(speech, np.random.default_rng(seed))
        assert abs(_snr_db(speech, noisy - speech) - 5.0) < 0.1
