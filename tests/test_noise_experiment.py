"""The noise-robustness experiment (whisper_scratch/experiments/noise_study.py, bench/noise_robustness.py):
what each arm trains, the matched LoRA size, the split by prompt, the whole pipeline on a small
random model, the learning-rate search on a dev split, and (shared) that its evaluation of the
stock model is transcribe.py's."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from whisper_scratch.audio.geometry import SAMPLE_RATE
from whisper_scratch.audio.noise import (
    NoiseMixer,
    pink_noise,
    white_noise,
)
from whisper_scratch.data.manifest import read_manifest
from whisper_scratch.evaluation.metrics import utterance_word_errors
from whisper_scratch.evaluation.noisy import score_run, transcribe_noisy
from whisper_scratch.experiments.noise_study import (
    ARMS,
    ExperimentConfig,
    build_arm,
    comparison_table,
    encode_conditions,
    evaluate_arms,
    load_clips,
    lora_rank_matching,
    markdown_table,
    noise_branch_parameters,
    run_experiment,
    score,
    search_table,
    split_by_prompt,
)
from whisper_scratch.inference.decoding import DecodingOptions, FallbackOptions
from whisper_scratch.inference.options import TranscribeOptions
from whisper_scratch.model.checkpoint import load_model, save_model
from whisper_scratch.model.loaded import whisper_vocabulary
from whisper_scratch.model.whisper import ModelDimensions, Whisper

REPO = Path(__file__).resolve().parents[1]


ASTERISK = REPO / "tests/data/asterisk16/manifest.jsonl"
# 10-second windows: every clip of tests/data/asterisk16 fits; small enough to train in seconds.
DIMS = ModelDimensions(n_mels=80, n_audio_ctx=500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                       n_vocab=51864, n_text_ctx=64, n_text_state=64, n_text_head=2, n_text_layer=2)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    """A random English-vocabulary model saved as a checkpoint, and two noise folders made here."""
    root = tmp_path_factory.mktemp("experiment")
    torch.manual_seed(0)
    save_model(Whisper(DIMS), root / "model")
    rng = np.random.default_rng(0)
    for name, make in (("train", white_noise), ("test", pink_noise)):
        (root / name).mkdir()
        sf.write(root / name / f"{name}.wav", 0.1 * make(2 * SAMPLE_RATE, rng), SAMPLE_RATE)
    return {"model": str(root / "model"), "train": root / "train", "test": root / "test", "root": root}


def config(small: dict, **kw) -> ExperimentConfig:
    values = dict(manifest=ASTERISK, train_noise=small["train"], test_noise=small["test"], model=small["model"],
                  test_fraction=0.3, variants=1, steps=3, batch_size=4, warmup_steps=1, eval_batch_size=4,
                  sample_len=6, eval_snrs=(10.0, 0.0), picture_snr=0.0)
    return ExperimentConfig(**{**values, **kw})


def test_split_by_prompt_keeps_each_transcript_on_one_side():
    rows = read_manifest(ASTERISK)
    rows = rows + [type(r)(r.audio, r.text.upper() + "!", r.language) for r in rows[:5]]  # repeats, spelt otherwise
    train, test = split_by_prompt(rows, 0.3, 0, "en")
    assert train and test and len(train) + len(test) == len(rows)
    words = {tuple(r.text.lower().strip(".!").split()) for r in test}
    assert not {tuple(r.text.lower().strip(".!").split()) for r in train} & words
    assert split_by_prompt(rows, 0.3, 0, "en") == (train, test)
    assert split_by_prompt(rows, 0.3, 1, "en") != (train, test)
    # The dev split is drawn from the train side with another salt: a fraction of it, by prompt.
    rest, dev = split_by_prompt(train, 0.3, 0, "en", salt="dev")
    assert rest and dev and len(rest) + len(dev) == len(train)
    assert not {tuple(r.text.lower().strip(".!").split()) for r in rest} & {tuple(r.text.lower().strip(".!").split())
                                                                          for r in dev}
    assert split_by_prompt(train, 0.3, 0, "en") == (train, [])  # without the salt it would draw nothing


def test_each_arm_trains_what_it_says(small):
    cfg = config(small)
    stock = load_model(cfg.model)
    branch = noise_branch_parameters(DIMS)
    seen = {}
    for name in ARMS[1:]:
        model, groups = build_arm(name, cfg, stock)
        assert model.encoder is stock.encoder
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable == {n for g in groups for p in g["params"] for n, q in model.named_parameters() if p is q}
        assert {g["lr"] for g in groups if any(".noise_" in n or "lora_" in n for n, q in model.named_parameters()
                                               for p in g["params"] if p is q)} <= {cfg.new_learning_rate}
        seen[name] = trainable
        if name == "lora":
            per_rank = 2 * DIMS.n_text_state * 8 * DIMS.n_text_layer  # 8 projections of D x D per layer
            assert lora_rank_matching(model, branch) == round(branch / per_rank)
            assert abs(sum(p.numel() for n, p in model.named_parameters() if p.requires_grad) - branch) <= per_rank / 2
    assert all(n.startswith("decoder.") and ".noise_" not in n for n in seen["finetune"])
    assert seen["dual"] == seen["finetune"] | seen["flamingo"]
    assert seen["flamingo"] and all(".noise_" in n for n in seen["flamingo"])
    assert sum(p.numel() for n, p in build_arm("flamingo", cfg, stock)[0].named_parameters() if p.requires_grad) == branch
    assert seen["lora"] and all("lora_" in n and n.startswith("decoder.") for n in seen["lora"])


def test_without_training_every_arm_transcribes_like_stock(small, tmp_path):
    """0 steps: the zero-initialised noise branch and LoRA change nothing, at every SNR, and the
    whole pipeline (table, JSON, pictures) runs."""
    results = run_experiment(config(small, steps=0), tmp_path, "untrained", progress=lambda _: None)
    stock = results["arms"]["stock"]["hypotheses"]
    assert results["conditions"] == ["clean", "10 dB", "0 dB"]
    assert len(stock["clean"]) == results["test_clips"] > 0
    for name in ARMS[1:]:
        assert results["arms"][name]["hypotheses"] == stock, name
    for picture in results["pictures"].values():
        assert Path(picture).stat().st_size > 0
    assert set(results["pictures"]) == {"wer_vs_snr", "gate_vs_snr", "attention_dual", "attention_flamingo"}
    gates = results["arms"]["dual"]["gate"]
    assert set(gates) == set(results["conditions"]) and all(len(g) == DIMS.n_text_layer for g in gates.values())
    assert all(0 < v < 1 for g in gates.values() for v in g)
    assert all(v == 0 for s in results["arms"]["dual"]["noise_share"].values() for v in s)  # a_noise is exactly 0
    assert markdown_table(results).count("\n") == 1 + len(ARMS)
    stored = json.loads(json.dumps(results))  # what --rescore reads back
    assert score(stored, "standard", tmp_path)["arms"] == results["arms"] and stored["scoring"] == "standard"
    lenient = score(stored, "lenient", tmp_path / "again")
    assert lenient["scoring"] == "lenient" and (tmp_path / "again" / "wer_vs_snr.png").stat().st_size > 0
    with pytest.raises(ValueError, match="scoring"):
        config(small, scoring="kind")


def test_training_moves_the_trained_arms_the_same_way_every_time(small, tmp_path):
    a = run_experiment(config(small), tmp_path / "a", "a", progress=lambda _: None)
    b = run_experiment(config(small), tmp_path / "b", "b", progress=lambda _: None)
    for name in ARMS:
        assert a["arms"][name]["losses"] == b["arms"][name]["losses"]
        assert a["arms"][name]["hypotheses"] == b["arms"][name]["hypotheses"]
    assert all(len(a["arms"][n]["losses"]) == 3 for n in ARMS[1:])
    assert a["arms"]["dual"]["losses"][0] == a["arms"]["finetune"]["losses"][0]  # same first batch, same start
    assert any(v > 0 for s in a["arms"]["flamingo"]["noise_share"].values() for v in s)  # the branch now speaks
    assert a["arms"]["lora"]["new_learning_rate"] == 1e-3 and a["arms"]["finetune"]["learning_rate"] == 1e-5
    assert a["search"] is None and a["dev_clips"] == 0
    # The paired comparisons count the errors of each arm and its control per test condition.
    assert set(a["comparisons"]) == {"dual vs finetune", "flamingo vs lora"}
    for condition, row in a["comparisons"]["dual vs finetune"].items():
        errors = [sum(e for e, _ in utterance_word_errors(a["references"], a["arms"][n]["hypotheses"][condition], "en"))
                  for n in ("finetune", "dual")]
        assert [row["control_errors"], row["arm_errors"]] == errors
        assert row["low"] <= row["reduction"] <= row["high"]
    assert comparison_table(a).count("\n") == 1 + 2 * len(a["conditions"])


def test_the_search_chooses_each_arms_rate_on_dev_and_tests_only_the_chosen(small, tmp_path):
    cfg = config(small, dev_fraction=0.3, learning_rates=(1e-5, 1e-3), new_learning_rates=(1e-4, 1e-2), eval_snrs=(0.0,))
    results = run_experiment(cfg, tmp_path, "search", progress=lambda _: None)
    search, arms = results["search"], results["arms"]
    assert results["dev_clips"] == len(search["references"]) > 0
    assert not set(search["audio"]) & set(results["test_audio"])
    trials = search["trials"]
    assert [(t["arm"], t["rate"]) for t in trials] == [(n, r) for n in ARMS[1:]
                                                       for r in ((1e-5, 1e-3) if n == "finetune" else (1e-4, 1e-2))]
    chosen = {}
    for name in ARMS[1:]:
        mine = [t for t in trials if t["arm"] == name]
        winners = [t for t in mine if t["chosen"]]
        assert len(winners) == 1
        best = min(mine, key=lambda t: (t["dev_mean_wer"], t["rate"]))
        assert winners[0] is best and arms[name]["dev_mean_wer"] == best["dev_mean_wer"]
        assert arms[name]["losses"][-1:] == best["final_loss"]  # the chosen model is the one tested
        assert best["dev_mean_wer"] == pytest.approx(np.mean([r["wer"] for r in best["dev_rates"].values()]))
        assert set(best["hypotheses"]) == set(results["conditions"])
        chosen[name] = best["rate"]
    assert arms["finetune"]["learning_rate"] == chosen["finetune"]
    assert arms["dual"]["learning_rate"] == chosen["finetune"]  # dual is finetune plus the branch
    for name in ("dual", "flamingo", "lora"):
        assert arms[name]["new_learning_rate"] == chosen[name]
    assert all(t["learning_rate"] == chosen["finetune"] for t in trials if t["arm"] == "dual")
    assert search_table(results).count("\n") == 1 + len(trials) and search_table(results).count("**") == 2 * 2 * 4
    with pytest.raises(ValueError, match="all three or none"):
        config(small, learning_rates=(1e-5,), new_learning_rates=(1e-3,))
    with pytest.raises(ValueError, match="all three or none"):
        config(small, dev_fraction=0.2, learning_rates=(1e-5,))


def test_a_stopped_search_goes_on_from_its_last_finished_arm(small, tmp_path, monkeypatch):
    import whisper_scratch.experiments.noise_study as study
    cfg = config(small, dev_fraction=0.3, learning_rates=(1e-5, 1e-3), new_learning_rates=(1e-4, 1e-2),
                 eval_snrs=(0.0,))
    first = run_experiment(cfg, tmp_path / "out", "first", progress=lambda _: None, work_dir=tmp_path / "work")
    kept = tmp_path / "work/arms"
    assert sorted(p.name for p in kept.iterdir()) == sorted(
        ["config.json"] + [f"{n}.{ext}" for n in ARMS[1:] for ext in ("pt", "json")])
    for name in ("flamingo", "lora"):  # stopped while training flamingo
        (kept / f"{name}.pt").unlink()
        (kept / f"{name}.json").unlink()
    trained = []
    make_arm = study.make_arm
    monkeypatch.setattr(study, "make_arm", lambda name, *a: trained.append(name) or make_arm(name, *a))
    again = run_experiment(cfg, tmp_path / "out2", "again", progress=lambda _: None, work_dir=tmp_path / "work")
    assert trained == ["flamingo"] * 2 + ["lora"] * 2  # finetune and dual restored, not trained again
    untimed = [[{k: v for k, v in t.items() if k != "train_seconds"} for t in r["search"]["trials"]]
               for r in (first, again)]
    assert untimed[0] == untimed[1]
    for name in ARMS:
        assert again["arms"][name]["hypotheses"] == first["arms"][name]["hypotheses"]
        assert again["arms"][name]["losses"] == first["arms"][name]["losses"]
    with pytest.raises(ValueError, match="another configuration"):
        run_experiment(replace(cfg, steps=4), tmp_path / "out3", "other", progress=lambda _: None,
                       work_dir=tmp_path / "work")


def test_bf16_autocasts_the_forward_passes_and_keeps_fp32_weights(small, tmp_path):
    cfg = config(small, precision="bf16", arms=("stock", "finetune", "dual"))
    _, groups = build_arm("dual", cfg, load_model(small["model"]))
    assert all(p.dtype == torch.float32 for g in groups for p in g["params"])
    results = run_experiment(cfg, tmp_path, "bf16", progress=lambda _: None)
    assert all(np.isfinite(results["arms"][n]["losses"]).all() and len(results["arms"][n]["losses"]) == 3
               for n in ("finetune", "dual"))
    fp32 = run_experiment(replace(cfg, precision="fp32"), tmp_path / "fp32", "fp32", progress=lambda _: None)
    assert results["arms"]["finetune"]["losses"] != fp32["arms"]["finetune"]["losses"]  # it did compute in bf16
    assert results["arms"]["finetune"]["losses"] == pytest.approx(fp32["arms"]["finetune"]["losses"], rel=0.05)
    with pytest.raises(ValueError, match="precision must be fp32 or bf16"):
        config(small, precision="fp16")


@pytest.mark.shared
def test_stock_evaluation_is_transcribe_pys(tiny_en_dir, shared_data):
    """The experiment's noisy test clips and greedy decoding give exactly the transcripts of the
    transcribe.py path (evaluation.noisy.transcribe_noisy) with greedy decoding and no silence gate."""
    cfg = ExperimentConfig(manifest=shared_data / "asterisk-en/manifest.jsonl", train_noise=shared_data / "noise/train",
                           test_noise=shared_data / "noise/test", model=str(tiny_en_dir), eval_clips=6,
                           eval_snrs=(5.0, -5.0), picture_snr=5.0, eval_batch_size=3)
    stock = load_model(cfg.model).eval()
    tokenizer = whisper_vocabulary(stock)
    _, test_rows = split_by_prompt(read_manifest(cfg.manifest), cfg.test_fraction, cfg.seed, cfg.language)
    clips, _ = load_clips(test_rows, cfg.eval_clips, cfg.seed, 480000)
    encoded = encode_conditions(stock, clips, cfg)
    ours = evaluate_arms({"stock": stock}, clips, encoded, cfg, tokenizer, progress=lambda _: None)
    rows = [c.utterance for c in clips]
    opts = TranscribeOptions(decoding=DecodingOptions(language="en", without_timestamps=True,
                                                      sample_len=cfg.sample_len),
                             batch_size=3, fallback=FallbackOptions((0.0,), no_speech_threshold=None), progress=False)
    runs = transcribe_noisy(stock, [r.audio for r in rows], opts, tokenizer, NoiseMixer(cfg.test_noise), cfg.eval_snrs)
    for run in runs:
        theirs = [u["hypothesis"] for u in score_run(run, rows, "en").utterances]
        assert ours["stock"].hypotheses[f"{run.snr_db:g} dB"] == theirs
