"""Whisper in plain PyTorch, with OpenAI's parameter names so their checkpoints load strictly.

New parts carry new names: `noise_cross_attn`, `noise_cross_attn_ln` and `noise_gate` form the
optional second (noise) cross-attention of each decoder block (see `ResidualAttentionBlock`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

# Attention kernels whose outputs gradient checkpointing keeps rather than recomputes: they cost
# about a tenth of a training step to run again, and their output is one (B, T, D) tensor.
_SAVED_IN_CHECKPOINT = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_cudnn_attention.default,
}


def _keep_attention(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _SAVED_IN_CHECKPOINT else CheckpointPolicy.PREFER_RECOMPUTE


@dataclass(frozen=True)
class ModelDimensions:
    """The ten numbers of an OpenAI checkpoint's `dims`, same names and order."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _dims(n_mels: int, state: int, head: int, layer: int, vocab: int, text_layer: int | None = None) -> ModelDimensions:
    return ModelDimensions(n_mels, 1500, state, head, layer, vocab, 448, state, head, text_layer or layer)


# Every published size; ".en" models use the GPT-2 vocabulary, large-v3 adds Cantonese (128 mels).
SIZES: dict[str, ModelDimensions] = {
    "tiny.en": _dims(80, 384, 6, 4, 51864),
    "tiny": _dims(80, 384, 6, 4, 51865),
    "base.en": _dims(80, 512, 8, 6, 51864),
    "base": _dims(80, 512, 8, 6, 51865),
    "small.en": _dims(80, 768, 12, 12, 51864),
    "small": _dims(80, 768, 12, 12, 51865),
    "medium.en": _dims(80, 1024, 16, 24, 51864),
    "medium": _dims(80, 1024, 16, 24, 51865),
    "large-v1": _dims(80, 1280, 20, 32, 51865),
    "large-v2": _dims(80, 1280, 20, 32, 51865),
    "large-v3": _dims(128, 1280, 20, 32, 51866),
    "large-v3-turbo": _dims(128, 1280, 20, 32, 51866, text_layer=4),
}
SIZES["large"] = SIZES["large-v3"]
SIZES["turbo"] = SIZES["large-v3-turbo"]


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's encoder position table (length, channels): sin half then cos half."""
    log_step = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-log_step * torch.arange(channels // 2, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class LayerNorm(nn.LayerNorm):
    """Normalises in float32 whatever the model dtype: fp16 statistics overflow on loud frames."""

    def forward(self, x: Tensor) -> Tensor:
        # Weights in float32 too: CPU kernels reject a float32 input with bf16/fp16 weights.
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).type(x.dtype)


class _GeluLinear(torch.autograd.Function):
    """linear(gelu(a), weight, bias) that keeps `a` for backward but not gelu(a): the MLP's widest
    activation (4 x n_state per position) is recomputed in backward, which is cheap, instead of
    stored. Same values and gradients as autograd's; about a fifth less activation memory."""

    @staticmethod
    def forward(ctx, a: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(a, weight)
        return F.linear(F.gelu(a), weight.to(a.dtype), bias.to(a.dtype))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        a, weight = ctx.saved_tensors
        need_a, need_weight, need_bias = ctx.needs_input_grad  # a frozen fc2 (LoRA, frozen decoder) needs neither
        grad = grad.to(a.dtype)  # under autocast the weight was used in a's precision
        flat_grad = grad.flatten(0, -2)
        grad_a = torch.ops.aten.gelu_backward(grad @ weight.to(a.dtype), a) if need_a else None
        grad_weight = (flat_grad.T @ F.gelu(a).flatten(0, -2)).to(weight.dtype) if need_weight else None
        grad_bias = flat_grad.sum(0).to(weight.dtype) if need_bias else None
        return grad_a, grad_weight, grad_bias


class KVCache:
    """Static decoder cache (gpt-fast style): buffers are allocated once and written in place.

    self_k/self_v: n_layer tensors (B, H, max_len, Dh). Cross-attention keys/values depend only on the
    audio, so they are computed on the first call and kept in `cross` / `noise_cross`, once per
    audio: B = n_audio * `rows_per_audio` rows (samples or beams of each audio, consecutive) share
    their audio's (n_audio, H, T_audio, Dh), which every step reads in full.
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, d_head: int,
                 dtype: torch.dtype, device: torch.device, rows_per_audio: int = 1):
        self.rows_per_audio = rows_per_audio
        # One tensor per layer, not one for all: a compiled step then writes each in place,
        # where a write into a slice of one big tensor makes torch.compile copy all of it.
        shape = (batch, n_head, max_len, d_head)
        self.self_k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.self_v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.cross: list[tuple[Tensor, Tensor] | None] = [None] * n_layer
        self.noise_cross: list[tuple[Tensor, Tensor] | None] = [None] * n_layer
        self.offset = 0  # tokens already written

    def reorder(self, index: Tensor) -> None:
        """Beam search: row b of the batch continues from row index[b] (within the same audio)."""
        self.self_k = [k.index_select(0, index) for k in self.self_k]
        self.self_v = [v.index_select(0, index) for v in self.self_v]

    def drop(self, finished: Tensor) -> Tensor:
        """Drop the audios flagged in `finished` (n_audio,) bool, and their rows. The last audios
        still kept move into the freed slots and every tensor becomes a view of its first slots,
        so a drop copies only the audios that move. Returns (n_kept,) the audio index (before the
        drop) that each slot now holds."""
        n_kept = int((~finished).sum())
        holes = finished[:n_kept].nonzero()[:, 0]
        movers = (~finished[n_kept:]).nonzero()[:, 0] + n_kept
        order = torch.arange(n_kept, device=finished.device).index_copy(0, holes, movers)
        rpa = self.rows_per_audio
        steps = torch.arange(rpa, device=finished.device)
        hole_rows, mover_rows = ((a[:, None] * rpa + steps).flatten() for a in (holes, movers))

        def moved(t: Tensor, to: Tensor, source: Tensor, n: int) -> Tensor:
            t[to] = t[source]
            return t[:n]

        self.self_k = [moved(k, hole_rows, mover_rows, n_kept * rpa) for k in self.self_k]
        self.self_v = [moved(v, hole_rows, mover_rows, n_kept * rpa) for v in self.self_v]
        for store in (self.cross, self.noise_cross):
            store[:] = [kv and tuple(moved(t, holes, movers, n_kept) for t in kv) for kv in store]
        return order


class MultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def _heads(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, H, T, D/H)"""
        return x.view(x.shape[0], x.shape[1], self.n_head, -1).transpose(1, 2)

    def project_kv(self, xa: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values (B, H, T, Dh) of `xa` (B, T, D)."""
        return self._heads(self.key(xa)), self._heads(self.value(xa))

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor] | None = None, causal: bool = False,
                mask: Tensor | None = None, rows_per_kv: int = 1) -> Tensor:
        """x (B, T, D) -> (B, T, D). Self-attention when `kv` is None, else attends to `kv`, whose
        batch is B / rows_per_kv: each group of rows_per_kv consecutive rows attends to one."""
        q = self._heads(self.query(x))
        k, v = kv if kv is not None else self.project_kv(x)
        if rows_per_kv > 1:
            # The group's queries side by side, (B / g, H, g * T, Dh): one pass reads each audio's
            # keys and values once, not once per sample or beam (no mask: cross-attention only).
            b, h, t, dh = q.shape
            q = q.view(b // rows_per_kv, rows_per_kv, h, t, dh).transpose(1, 2).reshape(b // rows_per_kv, h, -1, dh)
            o = F.scaled_dot_product_attention(q, k, v)
            o = o.view(b // rows_per_kv, h, rows_per_kv, t, dh).transpose(1, 2).reshape(b, h, t, dh)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return self.out(o.transpose(1, 2).flatten(2))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block; decoder blocks add cross-attention and, optionally, a gated
    noise cross-attention: out = a_speech + g * a_noise, g = sigmoid(W [x; a_speech; a_noise] + b)
    per channel. The noise branch's output projection starts at zero, so a_noise == 0 and the
    block is exactly the pretrained one until training moves it, while the gradient still reaches
    that projection (as with LoRA's zero B). The gate sees the query and both readings, so it can
    learn per token and channel how much of the noise reading to trust."""

    def __init__(self, n_state: int, n_head: int, cross_attention: bool = False, dual_attention: bool = False):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.cross_attn = MultiHeadAttention(n_state, n_head) if cross_attention else None
        self.cross_attn_ln = LayerNorm(n_state) if cross_attention else None
        self.noise_cross_attn = MultiHeadAttention(n_state, n_head) if dual_attention else None
        self.noise_cross_attn_ln = LayerNorm(n_state) if dual_attention else None
        self.noise_gate = nn.Linear(3 * n_state, n_state) if dual_attention else None
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = LayerNorm(n_state)
        self.checkpoint = False
        if dual_attention:
            self.reset_noise_branch()

    def reset_noise_branch(self) -> None:
        """Fresh noise branch: zero output projection (identity at init), small random gate."""
        nn.init.zeros_(self.noise_cross_attn.out.weight)
        nn.init.zeros_(self.noise_cross_attn.out.bias)
        nn.init.normal_(self.noise_gate.weight, std=0.02)
        nn.init.zeros_(self.noise_gate.bias)

    def _cross(self, x: Tensor, xa: Tensor, cache: KVCache | None, layer: int) -> Tensor:
        rows = cache.rows_per_audio if cache is not None else 1
        h = self.cross_attn_ln(x)
        a = self.cross_attn(h, self._cached_kv(self.cross_attn, xa, cache, layer, "cross"), rows_per_kv=rows)
        if self.noise_cross_attn is None:
            return a
        hn = self.noise_cross_attn_ln(x)
        n = self.noise_cross_attn(hn, self._cached_kv(self.noise_cross_attn, xa, cache, layer, "noise_cross"),
                                  rows_per_kv=rows)
        g = torch.sigmoid(self.noise_gate(torch.cat([h, a, n], dim=-1)))
        return a + g * n

    @staticmethod
    def _cached_kv(attn: MultiHeadAttention, xa: Tensor, cache: KVCache | None, layer: int, slot: str):
        if cache is None:
            return attn.project_kv(xa)
        store = getattr(cache, slot)
        if store[layer] is None:
            # Stored contiguous (B, H, T, Dh): every decoding step reads all of them, and the
            # attention kernel reads contiguous heads faster than the projection's strided view.
            store[layer] = tuple(t.contiguous() for t in attn.project_kv(xa))
        return store[layer]

    def _self(self, x: Tensor, cache: KVCache | None, layer: int, pos: Tensor | None = None) -> Tensor:
        h = self.attn_ln(x)
        if cache is None:
            return self.attn(h, causal=self.cross_attn is not None)
        k, v = self.attn.project_kv(h)
        if pos is not None:
            # One token per row at position pos (1,), attending over the whole cache with the
            # later positions masked: every shape is the cache's, whatever the position, so a
            # compiled step is compiled once (see TextDecoder.step).
            cache.self_k[layer].index_copy_(2, pos, k)
            cache.self_v[layer].index_copy_(2, pos, v)
            mask = (torch.arange(cache.self_k[layer].shape[2], device=h.device) <= pos)[None]  # (1, max_len)
            return self.attn(h, (cache.self_k[layer], cache.self_v[layer]), mask=mask)
        t, start = h.shape[1], cache.offset
        cache.self_k[layer][:, :, start:start + t] = k
        cache.self_v[layer][:, :, start:start + t] = v
        kv = (cache.self_k[layer][:, :, :start + t], cache.self_v[layer][:, :, :start + t])
        mask = None
        if t > 1:  # new tokens see the cached past and, causally, each other
            mask = torch.ones(t, start + t, dtype=torch.bool, device=h.device).tril(diagonal=start)
        return self.attn(h, kv, mask=mask)

    def _forward(self, x: Tensor, xa: Tensor | None, cache: KVCache | None, layer: int,
                 pos: Tensor | None = None) -> Tensor:
        x = x + self._self(x, cache, layer, pos)
        if self.cross_attn is not None:
            x = x + self._cross(x, xa, cache, layer)
        h = self.mlp_ln(x)
        if torch.is_grad_enabled():
            fc1, _, fc2 = self.mlp
            return x + _GeluLinear.apply(fc1(h), fc2.weight, fc2.bias)
        return x + self.mlp(h)

    def forward(self, x: Tensor, xa: Tensor | None = None, cache: KVCache | None = None, layer: int = 0,
                pos: Tensor | None = None) -> Tensor:
        """x (B, T, D), xa (B, T_audio, D) -> (B, T, D). `pos` (1,): a one-token step over the whole
        static cache at that position (`TextDecoder.step`); xa may then be None (cross keys cached)."""
        if self.checkpoint and self.training and torch.is_grad_enabled():
            # Recompute activations in backward, except the attention outputs (see
            # _SAVED_IN_CHECKPOINT): trades ~20% more compute for most of a block's memory.
            return checkpoint(self._forward, x, xa, cache, layer, use_reentrant=False,
                              context_fn=partial(create_selective_checkpoint_contexts, _keep_attention))
        return self._forward(x, xa, cache, layer, pos)


class AudioEncoder(nn.Module):
    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(n_ctx, n_state))
        self.blocks = nn.ModuleList(ResidualAttentionBlock(n_state, n_head) for _ in range(n_layer))
        self.ln_post = LayerNorm(n_state)

    def forward(self, mel: Tensor) -> Tensor:
        """mel (B, n_mels, 2*T) -> (B, T, D); T is 1500 for 30 s. Shorter inputs use the first
        T positions (an opt-in speed-up: Whisper was trained on full windows only)."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        if x.shape[1] > self.positional_embedding.shape[0]:
            raise ValueError(f"audio too long for the encoder: {x.shape[1]} frames > {self.positional_embedding.shape[0]}")
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


class TextDecoder(nn.Module):
    def __init__(self, n_vocab: int, n_ctx: int, n_state: int, n_head: int, n_layer: int, dual_attention: bool):
        super().__init__()
        self.n_head = n_head
        self.token_embedding = nn.Embedding(n_vocab, n_state)
        # Small init: the embedding is also the output projection, and N(0, 1) rows would start
        # training from logits of size ~sqrt(n_state) (a loss near 100 instead of log(n_vocab)).
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.positional_embedding = nn.Parameter(torch.empty(n_ctx, n_state))
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(n_state, n_head, cross_attention=True, dual_attention=dual_attention)
            for _ in range(n_layer))
        self.ln = LayerNorm(n_state)
        # None: logits are x @ token_embedding.weight.T (tied, as in every Whisper checkpoint).
        # model.quantize sets a Linear over the same matrix here (quantized, or float32 logits for bf16).
        self.output_projection: nn.Module | None = None
        self._compiled_step: Callable[[Tensor, KVCache, Tensor], Tensor] | None = None  # made by step()

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device,
                  rows_per_audio: int = 1) -> KVCache:
        """A cache for `batch` rows of tokens, `rows_per_audio` consecutive rows per audio (see KVCache)."""
        d = self.token_embedding.embedding_dim
        return KVCache(len(self.blocks), batch, self.n_head, max_len, d // self.n_head, dtype, device, rows_per_audio)

    def forward(self, tokens: Tensor, xa: Tensor, cache: KVCache | None = None) -> Tensor:
        """tokens (B, T) after `cache.offset` cached ones, xa (B / cache.rows_per_audio, T_audio, D)
        -> logits (B, T, V) fp32."""
        start = cache.offset if cache is not None else 0
        x = self.token_embedding(tokens) + self.positional_embedding[start:start + tokens.shape[1]]
        x = x.to(xa.dtype)
        for i, block in enumerate(self.blocks):
            x = block(x, xa, cache, i)
        if cache is not None:
            cache.offset += tokens.shape[1]
        return self._logits(x)

    def step(self, tokens: Tensor, cache: KVCache, compiled: bool = False) -> Tensor:
        """One new token per row, tokens (B, 1), after cache.offset cached ones, whose cross-attention
        keys are cached (a first `forward` over the initial tokens made them) -> logits (B, 1, V) fp32.

        Attends over the whole cache, masked (`ResidualAttentionBlock._self` with `pos`), so every
        step of every window has the same shapes: `compiled` runs it through torch.compile, which
        then compiles once per batch shape (and rows per audio) rather than once per position.
        Logits equal `forward`'s up to the rounding of a longer, masked attention sum."""
        pos = torch.tensor([cache.offset], device=tokens.device)
        if compiled and self._compiled_step is None:
            # On a GPU, "reduce-overhead" replays the step as a CUDA graph: one launch per token.
            self._compiled_step = torch.compile(self._static_step, mode="reduce-overhead" if tokens.is_cuda else None)
        logits = (self._compiled_step if compiled else self._static_step)(tokens, cache, pos)
        cache.offset += 1
        return logits

    def _static_step(self, tokens: Tensor, cache: KVCache, pos: Tensor) -> Tensor:
        x = (self.token_embedding(tokens) + self.positional_embedding.index_select(0, pos)).to(cache.self_k[0].dtype)
        for i, block in enumerate(self.blocks):
            x = block(x, None, cache, i, pos)
        return self._logits(x)

    def _logits(self, x: Tensor) -> Tensor:
        """The last blocks' output (B, T, D) -> logits (B, T, V) fp32."""
        x = self.ln(x)
        if self.output_projection is not None:  # quantized, or bf16 with float32 logits: float32 in and out
            return self.output_projection(x.float())
        if x.dtype == torch.bfloat16 and not self.training and self.token_embedding.weight.dtype == torch.float32:
            # Decoding under bf16 autocast (the trainer's evaluation): bf16-rounded logits tie for the
            # top (model.quantize.fp32_logits says why); the weights are float32, so the product can be.
            with torch.autocast(x.device.type, enabled=False):
                return x.float() @ self.token_embedding.weight.T
        return (x @ self.token_embedding.weight.to(x.dtype).T).float()


class Whisper(nn.Module):
    """Encoder-decoder Whisper. `dual_attention` adds the gated noise cross-attention."""

    def __init__(self, dims: ModelDimensions, dual_attention: bool = False):
        super().__init__()
        self.dims = dims
        self.dual_attention = dual_attention
        self.encoder = AudioEncoder(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer)
        self.decoder = TextDecoder(dims.n_vocab, dims.n_text_ctx, dims.n_text_state, dims.n_text_head,
                                   dims.n_text_layer, dual_attention)
        # Cross-attention heads that follow the audio (word timestamps); checkpoints may override.
        heads = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
        heads[dims.n_text_layer // 2:] = True
        self.register_buffer("alignment_heads", heads, persistent=False)

    def set_alignment_heads(self, pairs: list[tuple[int, int]]) -> None:
        """Set the (layer, head) pairs used for word-level alignment."""
        heads = torch.zeros(self.dims.n_text_layer, self.dims.n_text_head, dtype=torch.bool)
        for layer, head in pairs:
            heads[layer, head] = True
        self.register_buffer("alignment_heads", heads, persistent=False)

    def embed_audio(self, mel: Tensor, padding: Tensor | None = None) -> Tensor:
        """mel (B, n_mels, 3000) -> audio features (B, 1500, D).

        A shorter mel (B, n_mels, n) is encoded alone and completed with the later positions of
        `padding` (1 or B, 1500, D), the features of a window of padding only: the encoder then
        does a fraction of the work on a short clip (`trim_padding` in transcribing and training)."""
        features = self.encoder(mel)
        if padding is not None and features.shape[1] < padding.shape[1]:
            rest = padding[:, features.shape[1]:].to(features.dtype).expand(features.shape[0], -1, -1)
            features = torch.cat([features, rest], dim=1)
        return features

    def logits(self, tokens: Tensor, audio_features: Tensor, cache: KVCache | None = None) -> Tensor:
        """tokens (B, T), audio features (B, 1500, D) -> (B, T, n_vocab) float32."""
        return self.decoder(tokens, audio_features, cache)

    def forward(self, mel: Tensor | None, tokens: Tensor, audio_features: Tensor | None = None,
                audio_padding: Tensor | None = None) -> Tensor:
        """Teacher-forced logits (B, T, n_vocab) for mel (B, n_mels, 3000) and tokens (B, T).

        `audio_features` (B, 1500, D), when given, stand in for the encoder's output on `mel`: a frozen
        encoder's output can be computed once and reused (see encoder_cache). A shorter mel is
        completed with `audio_padding` as in `embed_audio`."""
        if audio_features is None:
            audio_features = self.embed_audio(mel, audio_padding)
        return self.decoder(tokens, audio_features)

    @property
    def device(self) -> torch.device:
        return self.decoder.token_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv1.weight.dtype

    @property
    def is_multilingual(self) -> bool:
        return self.dims.n_vocab >= 51865

    @property
    def num_languages(self) -> int:
        return self.dims.n_vocab - 51765 - int(self.is_multilingual)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Per-block activation checkpointing for training (no effect in eval or under no_grad)."""
        for block in [*self.encoder.blocks, *self.decoder.blocks]:
            block.checkpoint = enabled

    def noise_parameters(self) -> list[nn.Parameter]:
        """Parameters of the noise branch and its gate (empty for a plain model)."""
        return [p for n, p in self.named_parameters() if ".noise_" in n]
