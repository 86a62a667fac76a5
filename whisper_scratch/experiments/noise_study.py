"""The noise-robustness experiment of docs/noise.md: is the dual-attention decoder better on noisy
speech than plain fine-tuning, and than a control with as many extra parameters?

One start (a pretrained Whisper), one data set split by prompt (a transcript and its repeats are
all on one side), one budget (steps x batch), one seed. Every arm keeps the encoder frozen, so
each training clip's variants (the clean clip and `variants` noisy mixes at SNRs drawn uniformly
from `snr_range`, noise from `train_noise`) are encoded once, and every arm trains its decoder on
the same cached features in the same order. Evaluation mixes `test_noise` (recordings training
never heard) into the test clips at each SNR with `audio.noise.NoiseMixer`'s fixed per-clip segments, encodes
each condition once and decodes it with every arm, greedily.

Arms (`ARMS`):
  stock     the pretrained model, untouched
  finetune  plain model, the whole decoder trained
  dual      dual attention: the whole decoder and the noise branch and gate trained
  flamingo  dual attention, only the noise branch and gate trained (the Whisper-Flamingo recipe)
  lora      plain model, only LoRA adapters on the decoder's attention trained, their rank chosen
            so that they have as many parameters as the noise branch: the control for flamingo

Pretrained weights train at `learning_rate`, new ones (noise branch and gate, LoRA) at
`new_learning_rate`, in every arm that has them. With `dev_fraction` > 0 the rates are not given
but chosen per arm (`search_learning_rates`): a dev split of the training side's prompts is held
out, each arm trains once per rate of its grid, and the rate with the lowest mean dev WER over the
test conditions is the arm's; only the chosen models see the test clips.

`precision` bf16 runs every forward pass (encoding, training, decoding) under bf16 autocast, with
fp32 weights and optimiser state, every arm alike: for CPUs with bf16 instructions. The search
keeps each arm's chosen model and trials in run_experiment's `work_dir` as it finishes the arm
(`KeptArms`); run again with the same configuration and folder, it restores them and goes on.
"""
from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..audio.features import log_mel_window
from ..audio.geometry import HOP_LENGTH, SAMPLE_RATE, window_frames
from ..audio.io import load_audio
from ..audio.noise import NoiseMixer, clip_keys, stable_hash
from ..common.files import write_json
from ..common.precision import DTYPES
from ..data.manifest import Utterance, read_manifest
from ..evaluation.metrics import SCORINGS, error_reduction_interval, error_rates, utterance_word_errors
from ..evaluation.noisy import condition_name
from ..evaluation.normalizers import get_normalizer
from ..inference.decoding import DecodingOptions, DecodingTask
from ..model.checkpoint import load_model, save_model
from ..model.loaded import whisper_vocabulary
from ..model.lora import PROJECTIONS, add_lora, merge_lora
from ..model.whisper import ModelDimensions, MultiHeadAttention, ResidualAttentionBlock, Whisper
from ..tokenizer import TokenizerBase
from ..training.dataset import IGNORE_INDEX, Batch, SpeechDataset, collate
from ..training.encoder_cache import EncoderCache, build_encoder_cache
from ..training.loop import micro_batch_loss
from ..training.setup import autocast, lr_factor
from .dual_inspect import gate_statistics, read_cross_attention
from .noise_plots import plot_dual_attention, plot_gate_vs_snr, plot_wer_vs_snr

ARMS = ("stock", "finetune", "dual", "flamingo", "lora")
DUAL_ARMS = ("dual", "flamingo")
# (control, arm) pairs whose word errors are compared with a paired bootstrap: does the branch
# help when the decoder trains anyway, and is it a better use of its parameters than adapters?
COMPARISONS = (("finetune", "dual"), ("lora", "flamingo"))


@dataclass
class ExperimentConfig:
    manifest: Path  # the clips and their transcripts (any listing read_manifest reads)
    train_noise: Path  # noise folder for training
    test_noise: Path  # noise folder for evaluation: other recordings than training's
    model: str = "base"  # anything load_model reads
    language: str | None = "en"
    test_fraction: float = 0.2  # of the distinct prompts
    train_clips: int | None = None  # at most this many (a seeded draw); None: all
    eval_clips: int | None = 100
    variants: int = 2  # noisy versions of each training clip, besides the clean one
    snr_range: tuple[float, float] = (-5.0, 20.0)  # dB, training
    eval_snrs: tuple[float, ...] = (20.0, 10.0, 5.0, 0.0, -5.0)
    steps: int = 300
    batch_size: int = 8
    learning_rate: float = 1e-5  # pretrained weights
    new_learning_rate: float = 1e-3  # noise branch and gate, LoRA adapters
    # Learning-rate search (search_learning_rates): > 0 holds out this fraction of the training
    # side's distinct prompts as a dev split and chooses each arm's rate there, from finetune's
    # `learning_rates` or the other arms' `new_learning_rates`.
    dev_fraction: float = 0.0
    learning_rates: tuple[float, ...] = ()
    new_learning_rates: tuple[float, ...] = ()
    warmup_steps: int = 30
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    eval_batch_size: int = 16
    sample_len: int = 96  # decoded tokens at most: a looping hypothesis stops there
    scoring: str = "standard"  # WER/CER scoring, see metrics.error_rates
    picture_snr: float = 0.0
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"  # fp32, or bf16: autocast over every forward pass (fp32 weights)
    arms: tuple[str, ...] = ARMS

    def __post_init__(self) -> None:
        unknown = set(self.arms) - set(ARMS)
        if unknown or "stock" not in self.arms:
            raise ValueError(f"arms must include stock and be among {', '.join(ARMS)}; got {', '.join(self.arms)}")
        if self.picture_snr not in self.eval_snrs:
            raise ValueError(f"picture_snr {self.picture_snr:g} must be one of eval_snrs {self.eval_snrs}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {', '.join(SCORINGS)}, got {self.scoring!r}")
        grids = (bool(self.learning_rates), bool(self.new_learning_rates))
        if (self.dev_fraction > 0 and grids != (True, True)) or (self.dev_fraction <= 0 and any(grids)):
            raise ValueError("a learning-rate search needs dev_fraction > 0 and both grids, learning_rates (finetune) "
                             "and new_learning_rates (dual, flamingo, lora): give all three or none")

    @property
    def searching(self) -> bool:
        return self.dev_fraction > 0

    def autocast(self) -> AbstractContextManager:
        """The forward passes' precision (nothing to do in fp32)."""
        return autocast(torch.device(self.device), DTYPES[self.precision])

    def record(self) -> dict:
        """The configuration as JSON values (paths as text, tuples as lists)."""
        return json.loads(json.dumps(asdict(self), default=str))


@dataclass
class Clip:
    utterance: Utterance
    audio: np.ndarray  # 16 kHz float32 (T,)
    key: str  # what seeds its noise (audio.noise.clip_keys)


def split_by_prompt(rows: list[Utterance], test_fraction: float, seed: int,
                    language: str | None, salt: str = "") -> tuple[list[Utterance], list[Utterance]]:
    """(train, test): a transcript (normalised) goes to test when its seeded hash falls in the
    first `test_fraction` of the range, with every clip that says it. Another `salt` draws
    independently of the first split (the dev split is drawn from its train side)."""
    normalize = get_normalizer(language)

    def is_test(row: Utterance) -> bool:
        return stable_hash(f"{seed}{salt}:{normalize(row.text)}") % 10_000 < test_fraction * 10_000

    return [r for r in rows if not is_test(r)], [r for r in rows if is_test(r)]


def load_clips(rows: list[Utterance], limit: int | None, seed: int, max_samples: int) -> tuple[list[Clip], int]:
    """A seeded draw of at most `limit` rows, decoded; clips longer than the encoder window are
    left out (they would need windowed decoding): (clips, how many were left out)."""
    order = np.random.default_rng(seed).permutation(len(rows))
    keys = clip_keys([r.audio for r in rows])
    clips, too_long = [], 0
    for i in order:
        if limit is not None and len(clips) == limit:
            break
        audio = load_audio(rows[i].audio)
        if len(audio) > max_samples:
            too_long += 1
            continue
        clips.append(Clip(rows[i], audio, keys[rows[i].audio]))
    return clips, too_long


def _window(model: Whisper, audio: np.ndarray) -> Tensor:
    """The encoder input of a clip as transcribe.py's default path builds it (zero frames after it)."""
    return log_mel_window(audio, model.dims.n_mels, 2 * model.dims.n_audio_ctx)


@torch.no_grad()
def _encode(model: Whisper, audios: list[np.ndarray]) -> Tensor:
    """Encoder output (B, S, D) float32 of a batch of clips."""
    mels = torch.stack([_window(model, a) for a in audios]).to(model.device, model.dtype)
    return model.embed_audio(mels).float()


class StudyClips(SpeechDataset):
    """Clips of the study as the trainer's dataset serves them (the same labels: prefix,
    <|notimestamps|>, transcript, <|endoftext|>). For the encoder cache, epoch v is variant v:
    0 the clean clip, v >= 1 the clip mixed with the noise of `mixer` at an SNR drawn from
    `snr_range` for (seed, clip, v)."""

    def __init__(self, clips: list[Clip], tokenizer: TokenizerBase, model: Whisper, language: str | None,
                 seed: int = 0, mixer: NoiseMixer | None = None, snr_range: tuple[float, float] = (0.0, 0.0)):
        super().__init__([c.utterance for c in clips], tokenizer, model.dims.n_mels, model.dims.n_text_ctx, language,
                         seed=seed, n_frames=window_frames(model.dims.n_audio_ctx))
        self.clips, self.mixer, self.snr_range = clips, mixer, snr_range

    def snr_db(self, index: int, variant: int) -> float:
        """The SNR of a noisy variant (variant >= 1) of clip `index`."""
        return float(np.random.default_rng([self.seed, stable_hash(self.clips[index].key), variant]).uniform(*self.snr_range))

    def mel(self, index: int) -> tuple[Tensor, float]:
        clip, variant = self.clips[index], self.epoch
        audio = clip.audio
        if variant > 0:
            audio = self.mixer.mix(clip.audio, f"{clip.key}#{variant}", self.snr_db(index, variant))[0]
        return log_mel_window(audio, self.n_mels, self.n_frames), len(clip.audio) / SAMPLE_RATE

    def cache_key(self) -> str:
        noise = str(self.mixer.noise_dir) if self.mixer else "none"
        return json.dumps([super().cache_key(), noise, list(self.snr_range)])

    def batch(self, items: list[tuple[int, Tensor]]) -> Batch:
        """The Batch of (clip index, encoder features (S, D)) pairs, padded as the trainer pads."""
        return collate([self.example(i, len(self.clips[i].audio) / SAMPLE_RATE, audio_features=f) for i, f in items])


@dataclass
class TrainingSet:
    clips: StudyClips
    cache: EncoderCache  # (clip, variant) -> encoder features; variant 0 is the clean clip
    seconds: float  # encoding time


def encode_training_set(model: Whisper, clips: list[Clip], cfg: ExperimentConfig, tokenizer: TokenizerBase,
                        folder: Path) -> TrainingSet:
    """Every training clip, clean and mixed with `train_noise` `variants` times at an SNR drawn from
    `snr_range` (seeded per clip and variant), through the frozen encoder once, into the trainer's
    encoder cache in `folder` (fp16, reused by a later run of the same clips and model)."""
    started = time.time()
    data = StudyClips(clips, tokenizer, model, cfg.language, cfg.seed, NoiseMixer(cfg.train_noise, cfg.seed),
                      cfg.snr_range)

    def encode(mel: Tensor) -> Tensor:
        with cfg.autocast():
            return model.embed_audio(mel.to(model.device, model.dtype))

    cache = build_encoder_cache(encode, model.encoder, data, folder, 1 + cfg.variants, cfg.eval_batch_size,
                                storage="fp16", desc="encoding training windows")
    return TrainingSet(data, cache, time.time() - started)


def draw_schedule(n_clips: int, n_variants: int, steps: int, batch_size: int, seed: int) -> list[list[tuple[int, int]]]:
    """(clip, variant) pairs for each step: clips in a new seeded order every epoch, the variant
    drawn uniformly (so about 1 in n_variants examples is clean). Every arm gets this one schedule."""
    rng = np.random.default_rng([seed, 1])
    stream: list[int] = []
    while len(stream) < steps * batch_size:
        stream += rng.permutation(n_clips).tolist()
    variants = rng.integers(n_variants, size=steps * batch_size).tolist()
    pairs = list(zip(stream[:steps * batch_size], variants))
    return [pairs[s * batch_size:(s + 1) * batch_size] for s in range(steps)]


def noise_branch_parameters(dims: ModelDimensions) -> int:
    """Parameters the dual attention adds to a model of these dimensions (noise branch, its norm, gate)."""
    block = ResidualAttentionBlock(dims.n_text_state, dims.n_text_head, cross_attention=True, dual_attention=True)
    return dims.n_text_layer * sum(p.numel() for name, p in block.named_parameters() if name.startswith("noise_"))


def lora_rank_matching(model: Whisper, n_params: int) -> int:
    """The LoRA rank whose adapters on every decoder attention projection have about n_params
    parameters (each adapter of rank r on a D_in x D_out weight has r (D_in + D_out))."""
    per_rank = sum(getattr(m, name).in_features + getattr(m, name).out_features
                   for m in model.decoder.modules() if isinstance(m, MultiHeadAttention) for name in PROJECTIONS)
    return max(1, round(n_params / per_rank))


def build_arm(name: str, cfg: ExperimentConfig, stock: Whisper) -> tuple[Whisper, list[dict]]:
    """A fresh model for arm `name`, sharing the stock model's (frozen) encoder, and its optimizer
    parameter groups (pretrained weights at learning_rate, new ones at new_learning_rate)."""
    torch.manual_seed(cfg.seed)  # the same initial noise branch in both dual arms
    model = load_model(cfg.model, device=cfg.device, dual_attention=name in DUAL_ARMS)
    model.encoder = stock.encoder
    model.requires_grad_(False)
    new = model.noise_parameters()
    pretrained = []
    if name in ("finetune", "dual"):
        branch = {id(p) for p in new}
        pretrained = [p for p in model.decoder.parameters() if id(p) not in branch]
    if name == "lora":
        new = add_lora(model.decoder, lora_rank_matching(model, noise_branch_parameters(model.dims)))
    for p in pretrained + new:
        p.requires_grad_(True)
    groups = []
    for params, lr in ((pretrained, cfg.learning_rate), (new, cfg.new_learning_rate)):
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]  # biases and norms
        groups += [{"params": decay, "lr": lr, "weight_decay": cfg.weight_decay},
                   {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
    return model, [g for g in groups if g["params"]]


def train_arm(model: Whisper, groups: list[dict], data: TrainingSet, schedule: list[list[tuple[int, int]]],
              cfg: ExperimentConfig) -> dict:
    """The trainer's loss, AdamW and warmup-then-linear schedule on the cached features; returns
    the losses and the time."""
    started = time.time()
    optimizer = torch.optim.AdamW(groups)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg.warmup_steps, "linear", len(schedule)))
    params = [p for g in groups for p in g["params"]]
    losses = []
    model.train()
    for step in schedule:
        batch = data.clips.batch([(i, data.cache.features(i, v)) for i, v in step]).to(cfg.device)
        with cfg.autocast():
            loss = micro_batch_loss(model, batch) / (batch.labels != IGNORE_INDEX).sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        losses.append(loss.item())
    model.eval()
    return {"losses": losses, "train_seconds": time.time() - started}


@dataclass
class ArmEvaluation:
    hypotheses: dict[str, list[str]] = field(default_factory=dict)  # condition -> one per clip
    decode_seconds: float = 0.0
    gate: dict[str, list[float]] = field(default_factory=dict)  # condition -> mean gate per layer
    noise_share: dict[str, list[float]] = field(default_factory=dict)  # condition -> |g a_noise| / |a_speech|


def _mixed(clip: Clip, mixer: NoiseMixer, snr: float | None) -> np.ndarray:
    return clip.audio if snr is None else mixer.mix(clip.audio, clip.key, snr)[0]


@dataclass
class EncodedClips:
    features: dict[str, list[Tensor]]  # condition -> encoder output (B, S, D) float32, one per batch of clips
    seconds: float  # encoding time


@torch.no_grad()
def encode_conditions(encoder: Whisper, clips: list[Clip], cfg: ExperimentConfig) -> EncodedClips:
    """Every clip clean and mixed with `test_noise` at each of `eval_snrs` (its fixed per-clip
    segment), through the frozen encoder once, in batches of eval_batch_size."""
    started = time.time()
    mixer = NoiseMixer(cfg.test_noise, cfg.seed)
    with cfg.autocast():
        features = {condition_name(snr): [_encode(encoder, [_mixed(c, mixer, snr)
                                                           for c in clips[i:i + cfg.eval_batch_size]])
                                          for i in range(0, len(clips), cfg.eval_batch_size)]
                    for snr in (None, *cfg.eval_snrs)}
    return EncodedClips(features, time.time() - started)


@torch.no_grad()
def evaluate_arms(models: dict[str, Whisper], clips: list[Clip], encoded: EncodedClips, cfg: ExperimentConfig,
                  tokenizer: TokenizerBase, progress: Callable[[str], None] = print) -> dict[str, ArmEvaluation]:
    """Greedy transcripts of every clip in every condition of `encoded`, by every model. Dual
    arms also report their gates, read on the reference transcripts (teacher-forced)."""
    options = DecodingOptions(language=cfg.language, without_timestamps=True, sample_len=cfg.sample_len)
    references = StudyClips(clips, tokenizer, next(iter(models.values())), cfg.language)
    out = {name: ArmEvaluation() for name in models}
    for condition, batches in encoded.features.items():
        # Per dual arm: token count, and gate and share summed over tokens, to average over batches.
        sums: dict[str, list] = {name: [0.0, 0.0, 0.0] for name, m in models.items() if m.dual_attention}
        for name in models:
            out[name].hypotheses[condition] = []
        for start, features in zip(range(0, len(clips), cfg.eval_batch_size), batches):
            labelled = references.batch([(i, f) for i, f in zip(range(start, start + len(features)), features.cpu())])
            tokens, mask = labelled.tokens.to(cfg.device), (labelled.labels != IGNORE_INDEX).to(cfg.device)
            for name, model in models.items():
                t = time.time()
                with cfg.autocast():
                    results = DecodingTask(model, tokenizer, options).run(features)
                out[name].decode_seconds += time.time() - t
                out[name].hypotheses[condition] += [r.text for r in results]
                if model.dual_attention:
                    with cfg.autocast():
                        gate, share = gate_statistics(model, features, tokens, mask)
                    n = float(mask.sum())
                    sums[name] = [sums[name][0] + n, sums[name][1] + n * gate.cpu(), sums[name][2] + n * share.cpu()]
        for name, (n, gate, share) in sums.items():
            out[name].gate[condition] = (gate / n).tolist()
            out[name].noise_share[condition] = (share / n).tolist()
        progress(f"evaluated {condition}")
    return out


@torch.no_grad()
def picture_clip(model: Whisper, clip: Clip, cfg: ExperimentConfig, tokenizer: TokenizerBase, path: Path,
                 title: str) -> Path:
    """The attention maps and gates of a dual arm on one clip at picture_snr, over its own greedy
    transcript (teacher-forced, so every row is a token it wrote)."""
    audio = _mixed(clip, NoiseMixer(cfg.test_noise, cfg.seed), cfg.picture_snr)
    mel = _window(model, audio)
    options = DecodingOptions(language=cfg.language, without_timestamps=True, sample_len=cfg.sample_len)
    with cfg.autocast():
        features = model.embed_audio(mel[None].to(model.device, model.dtype)).float()
        result = DecodingTask(model, tokenizer, options).run(features)[0]
        prefix = [*tokenizer.start_sequence(cfg.language or "en"), tokenizer.no_timestamps]
        tokens = torch.tensor([prefix + result.tokens], device=model.device)
        with read_cross_attention(model, weights=True) as readings:
            model.logits(tokens, features)
    labels = [tokenizer.decode_with_timestamps([t]) for t in tokens[0].tolist()]
    positions = min(model.dims.n_audio_ctx, len(audio) // HOP_LENGTH // 2 + 25)  # the clip and 0.5 s after
    return plot_dual_attention(mel.cpu(), readings, labels, positions, path,
                               f"{title}\nreference: {clip.utterance.text!r}\nhypothesis: {result.text!r}")


def trainable_parameters(model: Whisper) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_arm(name: str, cfg: ExperimentConfig, stock: Whisper, data: TrainingSet,
             schedule: list[list[tuple[int, int]]]) -> tuple[Whisper, dict]:
    """Arm `name` built and trained at cfg's rates: (model, its record: trainable parameters, the
    rates it trained at, losses, seconds)."""
    model, groups = build_arm(name, cfg, stock)
    record = {"trainable": trainable_parameters(model),
              "learning_rate": cfg.learning_rate if name in ("finetune", "dual") else None,
              "new_learning_rate": None if name == "finetune" else cfg.new_learning_rate,
              **train_arm(model, groups, data, schedule, cfg)}
    if name == "lora":
        merge_lora(model.decoder)  # the same function, plain weights: decoding as fast as the others
    return model, record


def mean_wer(rates: dict[str, dict[str, float]]) -> float:
    """The search's criterion: WER averaged over the conditions (clean and every SNR)."""
    return float(np.mean([r["wer"] for r in rates.values()]))


class KeptArms:
    """The folder where a search keeps each arm it has finished: `{arm}.pt` (the chosen model, in
    our checkpoint format) and `{arm}.json` (its record and trials), beside `config.json`, the
    configuration they were trained with. A folder of another configuration is refused."""

    def __init__(self, folder: Path, cfg: ExperimentConfig):
        self.folder = folder
        config = cfg.record()
        saved = folder / "config.json"
        if saved.exists() and json.loads(saved.read_text()) != config:
            raise ValueError(f"{folder} holds arms of another configuration ({saved}): give another folder or "
                             "delete it to start again")
        write_json(saved, config)

    def restore(self, name: str, stock: Whisper) -> tuple[Whisper, dict] | None:
        """(the arm's chosen model on the stock encoder, {"record", "trials"}) if it was kept."""
        weights, record = self.folder / f"{name}.pt", self.folder / f"{name}.json"
        if not (weights.exists() and record.exists()):
            return None
        model = load_model(weights, device=stock.device)
        model.encoder = stock.encoder
        return model.requires_grad_(False).eval(), json.loads(record.read_text())

    def keep(self, name: str, model: Whisper, record: dict, trials: list[dict]) -> None:
        """The weights first: a record without them is never taken for a finished arm."""
        save_model(model, self.folder / f"{name}.pt")
        write_json(self.folder / f"{name}.json", {"record": record, "trials": trials})


def search_learning_rates(cfg: ExperimentConfig, stock: Whisper, data: TrainingSet,
                          schedule: list[list[tuple[int, int]]], dev_clips: list[Clip], tokenizer: TokenizerBase,
                          progress: Callable[[str], None] = print,
                          kept: KeptArms | None = None) -> tuple[dict[str, Whisper], dict[str, dict], dict]:
    """Each trained arm once per rate of its grid, on the same schedule; the rate with the lowest
    mean_wer on the dev clips (clean and at every eval SNR, greedy) is the arm's. finetune's grid
    is learning_rates (the decoder's); dual's, flamingo's and lora's is new_learning_rates (the
    weights they add), and dual's decoder trains at the rate finetune chose, so that dual stays
    finetune plus the branch. An arm that `kept` holds is restored, not trained again; each arm
    finished here goes into it. Returns (the chosen models, their records with the dev criterion,
    the search: dev references and every trial's rates, criterion and transcripts)."""
    dev = encode_conditions(stock, dev_clips, cfg)
    models: dict[str, Whisper] = {}
    arms: dict[str, dict] = {}
    search = {"references": [c.utterance.text for c in dev_clips], "audio": [c.key for c in dev_clips],
              "encode_seconds": dev.seconds, "trials": []}
    finetune_rate = cfg.learning_rate
    for name in (a for a in ARMS if a in cfg.arms and a != "stock"):
        restored = kept.restore(name, stock) if kept else None
        if restored:
            models[name], saved = restored
            arms[name] = saved["record"]
            search["trials"] += saved["trials"]
            if name == "finetune":
                finetune_rate = arms[name]["learning_rate"]
            progress(f"{name}: restored from {kept.folder} (rate chosen before: "
                     f"{next(t['rate'] for t in saved['trials'] if t['chosen']):g})")
            continue
        grid = cfg.learning_rates if name == "finetune" else cfg.new_learning_rates
        trained = {}  # rate -> (model, record)
        for rate in grid:
            arm_cfg = (replace(cfg, learning_rate=rate) if name == "finetune"
                       else replace(cfg, learning_rate=finetune_rate, new_learning_rate=rate))
            trained[rate] = make_arm(name, arm_cfg, stock, data, schedule)
            progress(f"{name} at {rate:g}: {cfg.steps} steps in {trained[rate][1]['train_seconds']:.0f} s")
        evaluation = evaluate_arms({f"{rate:g}": model for rate, (model, _) in trained.items()}, dev_clips, dev, cfg,
                                   tokenizer, progress=lambda _: None)
        hypotheses = {rate: evaluation[f"{rate:g}"].hypotheses for rate in trained}
        dev_rates = {rate: {c: error_rates(search["references"], h, cfg.language, cfg.scoring) for c, h in hyps.items()}
                     for rate, hyps in hypotheses.items()}
        criterion = {rate: mean_wer(r) for rate, r in dev_rates.items()}
        best = min(trained, key=lambda rate: (criterion[rate], rate))
        trials = [{"arm": name, "rate": rate, "learning_rate": record["learning_rate"],
                   "new_learning_rate": record["new_learning_rate"], "dev_rates": dev_rates[rate],
                   "dev_mean_wer": criterion[rate], "final_loss": record["losses"][-1:],
                   "train_seconds": record["train_seconds"], "hypotheses": hypotheses[rate], "chosen": rate == best}
                  for rate, (_, record) in trained.items()]
        search["trials"] += trials
        models[name], arms[name] = trained[best][0], {**trained[best][1], "dev_mean_wer": criterion[best]}
        if kept:
            kept.keep(name, models[name], arms[name], trials)
        if name == "finetune":
            finetune_rate = best
        progress(f"{name}: dev mean WER " + ", ".join(f"{rate:g} {100 * v:.1f} %" for rate, v in criterion.items())
                 + f"; chose {best:g}")
    return models, arms, search


def run_experiment(cfg: ExperimentConfig, out_dir: Path, label: str,
                   progress: Callable[[str], None] = print, work_dir: Path | None = None) -> dict:
    """Train every arm (at cfg's rates, or at the rates search_learning_rates chooses on a dev
    split), evaluate them all on the test clips, draw the pictures into out_dir; returns the
    results (JSON-ready): configuration, data sizes, trainable parameters, rates and times per arm,
    WER/CER per arm and condition, the paired comparisons, gates, transcripts, the search.
    work_dir (else out_dir) holds the training set's encoder cache and the search's kept arms."""
    started = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = work_dir or out_dir
    torch.manual_seed(cfg.seed)
    stock = load_model(cfg.model, device=cfg.device).eval()
    stock.requires_grad_(False)
    tokenizer = whisper_vocabulary(stock)
    train_rows, test_rows = split_by_prompt(read_manifest(cfg.manifest), cfg.test_fraction, cfg.seed, cfg.language)
    dev_rows: list[Utterance] = []
    if cfg.searching:
        train_rows, dev_rows = split_by_prompt(train_rows, cfg.dev_fraction, cfg.seed, cfg.language, salt="dev")
    max_samples = 2 * stock.dims.n_audio_ctx * HOP_LENGTH
    train_clips, train_long = load_clips(train_rows, cfg.train_clips, cfg.seed, max_samples)
    dev_clips, dev_long = load_clips(dev_rows, cfg.eval_clips, cfg.seed, max_samples)
    test_clips, test_long = load_clips(test_rows, cfg.eval_clips, cfg.seed, max_samples)
    progress(f"{len(train_clips)} training clips, {len(dev_clips)} dev clips, {len(test_clips)} test clips "
             f"({train_long + dev_long + test_long} longer than the window left out)")

    data = encode_training_set(stock, train_clips, cfg, tokenizer, work_dir / "encoder_cache")
    schedule = draw_schedule(len(train_clips), 1 + cfg.variants, cfg.steps, cfg.batch_size, cfg.seed)
    models = {"stock": stock}
    arms = {"stock": {"trainable": 0, "learning_rate": None, "new_learning_rate": None, "train_seconds": 0.0,
                      "losses": []}}
    search = None
    if cfg.searching:
        chosen, records, search = search_learning_rates(cfg, stock, data, schedule, dev_clips, tokenizer, progress,
                                                        KeptArms(work_dir / "arms", cfg))
        models.update(chosen)
        arms.update(records)
    else:
        for name in (a for a in cfg.arms if a != "stock"):
            models[name], arms[name] = make_arm(name, cfg, stock, data, schedule)
            progress(f"{name}: {arms[name]['trainable']:,} trainable parameters, {cfg.steps} steps in "
                     f"{arms[name]['train_seconds']:.0f} s, losses {arms[name]['losses'][:1]} ... "
                     f"{arms[name]['losses'][-1:]}")

    encoded = encode_conditions(stock, test_clips, cfg)
    evaluation = evaluate_arms(models, test_clips, encoded, cfg, tokenizer, progress)
    conditions = list(encoded.features)
    for name, e in evaluation.items():
        arms[name]["decode_seconds"] = e.decode_seconds
        arms[name]["gate"], arms[name]["noise_share"] = e.gate, e.noise_share
        arms[name]["hypotheses"] = e.hypotheses
    results = {"label": label, "config": cfg.record(),
               "train_clips": len(train_clips), "dev_clips": len(dev_clips), "test_clips": len(test_clips),
               "train_encode_seconds": data.seconds, "eval_encode_seconds": encoded.seconds,
               "conditions": conditions, "references": [c.utterance.text for c in test_clips],
               "test_audio": [c.key for c in test_clips], "arms": arms, "search": search, "pictures": {}}
    score(results, cfg.scoring, out_dir)

    pictures = results["pictures"]
    duals = [n for n in models if models[n].dual_attention]
    if duals:
        pictures["gate_vs_snr"] = plot_gate_vs_snr(conditions, {n: arms[n]["gate"] for n in duals},
                                                   {n: arms[n]["noise_share"] for n in duals},
                                                   out_dir / "gate_vs_snr.png", f"{label}: the gate against SNR")
        clip = max((c for c in test_clips if len(c.audio) <= 8 * SAMPLE_RATE),
                   key=lambda c: (len(c.utterance.text.split()), c.key), default=test_clips[0])
        for name in duals:
            pictures[f"attention_{name}"] = picture_clip(
                models[name], clip, cfg, tokenizer, out_dir / f"attention_{name}.png",
                f"{label}, arm {name}: {clip.key} at {cfg.picture_snr:g} dB")
    results["pictures"] = {k: str(v) for k, v in pictures.items()}
    results["total_seconds"] = time.time() - started
    return results


def score(results: dict, scoring: str, out_dir: Path) -> dict:
    """(Re)compute every arm's WER/CER per condition from the stored transcripts with `scoring`,
    the paired comparisons of COMPARISONS, and the search's dev rates if there was one, and draw
    the WER/CER chart into out_dir; `results` is changed in place and returned. Scoring a finished
    run another way needs no model (the arms the search chose stay chosen)."""
    conditions, references = results["conditions"], results["references"]
    language = results["config"]["language"]
    arms = results["arms"]
    for arm in arms.values():
        arm["rates"] = {c: error_rates(references, arm["hypotheses"][c], language, scoring) for c in conditions}
    results["comparisons"] = {}
    for control, arm in (pair for pair in COMPARISONS if set(pair) <= set(arms)):
        rows = {}
        for c in conditions:
            errors = [[e for e, _ in utterance_word_errors(references, arms[name]["hypotheses"][c], language, scoring)]
                      for name in (control, arm)]
            rows[c] = {"control_errors": sum(errors[0]), "arm_errors": sum(errors[1]),
                       **error_reduction_interval(errors[0], errors[1], seed=results["config"]["seed"])}
        results["comparisons"][f"{arm} vs {control}"] = rows
    for trial in (results.get("search") or {}).get("trials", []):
        trial["dev_rates"] = {c: error_rates(results["search"]["references"], h, language, scoring)
                              for c, h in trial["hypotheses"].items()}
        trial["dev_mean_wer"] = mean_wer(trial["dev_rates"])
    results["scoring"] = scoring
    out_dir.mkdir(parents=True, exist_ok=True)
    chart = plot_wer_vs_snr(conditions, {n: a["rates"] for n, a in arms.items()}, out_dir / "wer_vs_snr.png",
                            f"{results['label']}: WER and CER against SNR ({scoring} scoring)")
    results["pictures"]["wer_vs_snr"] = str(chart)
    return results


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def markdown_table(results: dict) -> str:
    """WER % (CER %) per arm and condition, with trainable parameters, learning rates and times."""
    conditions = results["conditions"]
    lines = ["| arm | trainable params | lr (decoder) | lr (new weights) | train s | eval s | "
             + " | ".join(conditions) + " |",
             "| --- | ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in conditions) + " |"]
    for name, arm in results["arms"].items():
        cells = [f"{100 * arm['rates'][c]['wer']:.1f} ({100 * arm['rates'][c]['cer']:.1f})" for c in conditions]
        lines.append(f"| {name} | {arm['trainable']:,} | {_rate(arm.get('learning_rate'))} | "
                     f"{_rate(arm.get('new_learning_rate'))} | {arm['train_seconds']:.0f} | "
                     f"{arm['decode_seconds']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_table(results: dict) -> str:
    """Word errors of each arm against its control per condition: the relative reduction and its
    95 % paired-bootstrap interval."""
    lines = ["| comparison | condition | control errors | arm errors | fewer errors | 95 % interval |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for name, rows in results.get("comparisons", {}).items():
        for condition, r in rows.items():
            lines.append(f"| {name} | {condition} | {r['control_errors']} | {r['arm_errors']} | "
                         f"{100 * r['reduction']:.0f} % | {100 * r['low']:.0f} % to {100 * r['high']:.0f} % |")
    return "\n".join(lines)


def search_table(results: dict) -> str:
    """Every trial of the learning-rate search: the arm, the rate tried, dev WER per condition and
    the criterion (their mean); the chosen rate in bold."""
    search = results.get("search")
    if not search:
        return ""
    conditions = list(search["trials"][0]["dev_rates"]) if search["trials"] else []
    lines = ["| arm | rate tried | dev " + " | dev ".join(conditions) + " | mean dev WER | final loss | train s |",
             "| --- | ---: | " + " | ".join("---:" for _ in conditions) + " | ---: | ---: | ---: |"]
    for t in search["trials"]:
        mark = "**" if t.get("chosen") else ""
        loss = f"{t['final_loss'][0]:.3f}" if t["final_loss"] else ""
        lines.append(f"| {t['arm']} | {mark}{t['rate']:g}{mark} | "
                     + " | ".join(f"{100 * t['dev_rates'][c]['wer']:.1f}" for c in conditions)
                     + f" | {mark}{100 * t['dev_mean_wer']:.1f}{mark} | {loss} | {t['train_seconds']:.0f} |")
    return "\n".join(lines)
