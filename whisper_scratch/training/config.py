"""A training run's settings in one dataclass (`train.py`'s flags are its field names with dashes)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data.splits import DataConfig
from .augment import AugmentConfig


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    output_dir: Path = Path("runs/whisper")
    # Model: --init a checkpoint (fine-tuning) or --whisper-size from random weights.
    init: str | None = None
    whisper_size: str | None = None
    audio_ctx: int | None = None  # from scratch: encoder positions (2 mel frames each); 1500 = 30 s
    text_ctx: int | None = None
    width: int | None = None
    heads: int | None = None
    layers: int | None = None
    vocab_size: int = 1000  # SentencePiece pieces for a model trained from scratch
    tokenizer_dir: Path | None = None  # reuse a trained SentencePiece vocabulary
    dual_attention: bool = False
    freeze_encoder: bool = False
    freeze_decoder: bool = False  # all but the noise branch and its gate
    freeze_embeddings: bool = False
    lora_rank: int = 0
    lora_alpha: float | None = None
    # Optimisation.
    train_batch_size: int = 16
    eval_batch_size: int = 16
    grad_accum: int = 1
    num_epochs: int = 3
    max_steps: int | None = None  # optimizer steps; overrides num_epochs
    learning_rate: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 50
    schedule: str = "linear"  # linear | cosine | constant
    max_grad_norm: float = 1.0
    precision: str = "auto"  # auto: bf16 (or fp16 + scaler) on GPU, fp32 on CPU
    grad_checkpointing: bool = False
    optimizer: str = "adamw"  # adamw | adamw8bit (bitsandbytes, CUDA only)
    group_by_length: bool = False  # batches of similar label length (less padding)
    # With a frozen encoder: encode each clip once (cache_variants augmented versions of it) and
    # train and evaluate the decoder on the stored outputs (see encoder_cache).
    cache_encoder: bool = False
    cache_variants: int = 1
    cache_storage: str = "fp32"  # fp16 halves the file; fp32 is exact
    # Encode only each batch's clip frames plus a margin; the rest of the window's features come
    # from a window of padding only, encoded without gradient (as transcribe.py --trim_padding).
    trim_padding: bool = False
    eval_noise_dir: Path | None = None  # also evaluate with this noise mixed in, at each eval_snr (dB)
    eval_snr: tuple[float, ...] = (10.0, 0.0)
    # Decode the dev split with beam search fused with this n-gram LM (docs/lm.md) instead of
    # greedily: the WER that picks best/ is then the one the model will be used with.
    eval_lm: Path | None = None
    eval_lm_alpha: float = 0.5
    eval_lm_beta: float = 1.0
    eval_beam_size: int = 5
    scoring: str = "standard"  # WER/CER scoring of the evaluations, see metrics.error_rates; "lenient" is opt-in
    # Loop.
    eval_every: int = 200
    save_every: int = 200
    log_every: int = 10
    eval_before: bool = True
    max_eval_utterances: int | None = None
    num_workers: int = 2
    seed: int = 1234
    device: str = "auto"  # auto: this rank's GPU when CUDA works, else the CPU; cuda: the GPU or a clear error
    # Under torchrun: shard weights, gradients and optimizer states over the ranks (FSDP2) instead
    # of a full copy on each GPU (DDP); for the models whose training state does not fit one GPU.
    fsdp: bool = False
    ddp_timeout: float = 30.0  # minutes a collective may wait under torchrun (NCCL's own default is 10)
    limit_gib: float | None = None  # cap the CUDA allocator, so that a large card behaves like a small one
    sdpa: str = "auto"  # math: attention through full matrices, as a card below capability 8.0 computes it
    resume: bool = False
