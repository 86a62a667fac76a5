"""Hugging Face Whisper folders: config.json + model.safetensors (or pytorch_model.bin, or either
sharded with an index file), optional generation_config.json."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..model import ModelDimensions, Whisper
from . import (Checkpoint, CheckpointError, NOISE_MARKER, heads_to_pairs, invert, rename, safe_torch_load,
               tokenizer_extra)

log = logging.getLogger(__name__)

CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"
INDEX_SUFFIX = ".index.json"  # sharded weights: {"weight_map": {tensor name: shard file}}
TIED_OUTPUT = "proj_out.weight"  # HF's output projection, tied to the token embedding

_ENC = "model.encoder.layers.{i}."
_DEC = "model.decoder.layers.{i}."
# Hugging Face name -> OpenAI name; "{i}" is the layer index. Linear/LayerNorm weights and biases
# map one to one with no transposes; the key projections have no bias in either.
HF_TO_OPENAI: dict[str, str] = {
    "model.encoder.conv1.weight": "encoder.conv1.weight",
    "model.encoder.conv1.bias": "encoder.conv1.bias",
    "model.encoder.conv2.weight": "encoder.conv2.weight",
    "model.encoder.conv2.bias": "encoder.conv2.bias",
    "model.encoder.embed_positions.weight": "encoder.positional_embedding",
    _ENC + "self_attn.q_proj.weight": "encoder.blocks.{i}.attn.query.weight",
    _ENC + "self_attn.q_proj.bias": "encoder.blocks.{i}.attn.query.bias",
    _ENC + "self_attn.k_proj.weight": "encoder.blocks.{i}.attn.key.weight",
    _ENC + "self_attn.v_proj.weight": "encoder.blocks.{i}.attn.value.weight",
    _ENC + "self_attn.v_proj.bias": "encoder.blocks.{i}.attn.value.bias",
    _ENC + "self_attn.out_proj.weight": "encoder.blocks.{i}.attn.out.weight",
    _ENC + "self_attn.out_proj.bias": "encoder.blocks.{i}.attn.out.bias",
    _ENC + "self_attn_layer_norm.weight": "encoder.blocks.{i}.attn_ln.weight",
    _ENC + "self_attn_layer_norm.bias": "encoder.blocks.{i}.attn_ln.bias",
    _ENC + "fc1.weight": "encoder.blocks.{i}.mlp.0.weight",
    _ENC + "fc1.bias": "encoder.blocks.{i}.mlp.0.bias",
    _ENC + "fc2.weight": "encoder.blocks.{i}.mlp.2.weight",
    _ENC + "fc2.bias": "encoder.blocks.{i}.mlp.2.bias",
    _ENC + "final_layer_norm.weight": "encoder.blocks.{i}.mlp_ln.weight",
    _ENC + "final_layer_norm.bias": "encoder.blocks.{i}.mlp_ln.bias",
    "model.encoder.layer_norm.weight": "encoder.ln_post.weight",
    "model.encoder.layer_norm.bias": "encoder.ln_post.bias",
    "model.decoder.embed_tokens.weight": "decoder.token_embedding.weight",
    "model.decoder.embed_positions.weight": "decoder.positional_embedding",
    _DEC + "self_attn.q_proj.weight": "decoder.blocks.{i}.attn.query.weight",
    _DEC + "self_attn.q_proj.bias": "decoder.blocks.{i}.attn.query.bias",
    _DEC + "self_attn.k_proj.weight": "decoder.blocks.{i}.attn.key.weight",
    _DEC + "self_attn.v_proj.weight": "decoder.blocks.{i}.attn.value.weight",
    _DEC + "self_attn.v_proj.bias": "decoder.blocks.{i}.attn.value.bias",
    _DEC + "self_attn.out_proj.weight": "decoder.blocks.{i}.attn.out.weight",
    _DEC + "self_attn.out_proj.bias": "decoder.blocks.{i}.attn.out.bias",
    _DEC + "self_attn_layer_norm.weight": "decoder.blocks.{i}.attn_ln.weight",
    _DEC + "self_attn_layer_norm.bias": "decoder.blocks.{i}.attn_ln.bias",
    _DEC + "encoder_attn.q_proj.weight": "decoder.blocks.{i}.cross_attn.query.weight",
    _DEC + "encoder_attn.q_proj.bias": "decoder.blocks.{i}.cross_attn.query.bias",
    _DEC + "encoder_attn.k_proj.weight": "decoder.blocks.{i}.cross_attn.key.weight",
    _DEC + "encoder_attn.v_proj.weight": "decoder.blocks.{i}.cross_attn.value.weight",
    _DEC + "encoder_attn.v_proj.bias": "decoder.blocks.{i}.cross_attn.value.bias",
    _DEC + "encoder_attn.out_proj.weight": "decoder.blocks.{i}.cross_attn.out.weight",
    _DEC + "encoder_attn.out_proj.bias": "decoder.blocks.{i}.cross_attn.out.bias",
    _DEC + "encoder_attn_layer_norm.weight": "decoder.blocks.{i}.cross_attn_ln.weight",
    _DEC + "encoder_attn_layer_norm.bias": "decoder.blocks.{i}.cross_attn_ln.bias",
    _DEC + "fc1.weight": "decoder.blocks.{i}.mlp.0.weight",
    _DEC + "fc1.bias": "decoder.blocks.{i}.mlp.0.bias",
    _DEC + "fc2.weight": "decoder.blocks.{i}.mlp.2.weight",
    _DEC + "fc2.bias": "decoder.blocks.{i}.mlp.2.bias",
    _DEC + "final_layer_norm.weight": "decoder.blocks.{i}.mlp_ln.weight",
    _DEC + "final_layer_norm.bias": "decoder.blocks.{i}.mlp_ln.bias",
    "model.decoder.layer_norm.weight": "decoder.ln.weight",
    "model.decoder.layer_norm.bias": "decoder.ln.bias",
}
OPENAI_TO_HF: dict[str, str] = invert(HF_TO_OPENAI)


def is_huggingface_dir(folder: Path) -> bool:
    return (folder / CONFIG).is_file() and any(
        (folder / name).is_file() for name in (SAFETENSORS, PYTORCH_BIN, SAFETENSORS + INDEX_SUFFIX,
                                               PYTORCH_BIN + INDEX_SUFFIX))


def _read_weights(folder: Path) -> dict[str, Tensor]:
    for name, read in ((SAFETENSORS, load_file), (PYTORCH_BIN, safe_torch_load)):
        if (folder / name).is_file():
            return dict(read(folder / name))
        index = folder / (name + INDEX_SUFFIX)
        if index.is_file():
            state: dict[str, Tensor] = {}
            for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
                state.update(read(folder / shard))
            return state
    raise CheckpointError(f"{folder}: no {SAFETENSORS} or {PYTORCH_BIN} (nor a sharded index)")


def _dims(config: dict, source: str) -> ModelDimensions:
    if config.get("model_type", "whisper") != "whisper":
        raise CheckpointError(f"{source}: model_type {config['model_type']!r} is not whisper")
    # Our model is OpenAI's: exact GELU, unscaled embeddings, 4x wide feed-forward.
    if config.get("activation_function", "gelu") != "gelu" or config.get("scale_embedding", False):
        raise CheckpointError(f"{source}: needs activation_function 'gelu' and scale_embedding false")
    try:
        return ModelDimensions(
            n_mels=config["num_mel_bins"], n_audio_ctx=config["max_source_positions"], n_audio_state=config["d_model"],
            n_audio_head=config["encoder_attention_heads"], n_audio_layer=config["encoder_layers"],
            n_vocab=config["vocab_size"], n_text_ctx=config["max_target_positions"], n_text_state=config["d_model"],
            n_text_head=config["decoder_attention_heads"], n_text_layer=config["decoder_layers"])
    except KeyError as e:
        raise CheckpointError(f"{source}: config.json lacks {e.args[0]!r}") from None


def load_huggingface(folder: str | Path) -> Checkpoint:
    """Read a Hugging Face Whisper folder into OpenAI names."""
    folder = Path(folder)
    config = json.loads((folder / CONFIG).read_text())
    generation = json.loads((folder / GENERATION_CONFIG).read_text()) if (folder / GENERATION_CONFIG).is_file() else {}
    state = _read_weights(folder)
    # The output projection is the token embedding (tied); a different one cannot be represented.
    output = state.pop(TIED_OUTPUT, None)
    embedding = state.get("model.decoder.embed_tokens.weight")
    if output is not None and embedding is not None and not torch.equal(output, embedding):
        raise CheckpointError(f"{folder}: {TIED_OUTPUT} differs from the token embedding (untied output "
                              "projections are not supported)")
    extra: dict = tokenizer_extra(folder)
    for key, ours in (("suppress_tokens", "suppress_ids"), ("begin_suppress_tokens", "suppress_ids_begin")):
        ids = generation.get(key, config.get(key))
        if ids is not None:
            extra[ours] = [int(i) for i in ids]
    if "lang_to_id" in generation:
        extra["lang_ids"] = sorted(int(i) for i in generation["lang_to_id"].values())
    heads = generation.get("alignment_heads")
    return Checkpoint(
        dims=_dims(config, str(folder)),
        state_dict=rename(state, HF_TO_OPENAI, str(folder)),
        dual_attention=False,
        alignment_heads=heads_to_pairs(heads) if heads is not None else None,
        extra=extra,
        source=str(folder),
        format="huggingface",
    )


def to_huggingface(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """OpenAI-named tensors -> Hugging Face names (without the tied `proj_out.weight`)."""
    return rename(state_dict, OPENAI_TO_HF, "state dict")


def save_huggingface(model: Whisper, folder: str | Path) -> None:
    """Write `model` (without any noise branch) as a Hugging Face folder: config.json,
    model.safetensors and generation_config.json (alignment heads, suppress ids)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    d = model.dims
    if d.n_audio_state != d.n_text_state:
        raise ValueError("Hugging Face's Whisper has one d_model for encoder and decoder")
    config = {
        "model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"],
        "num_mel_bins": d.n_mels, "max_source_positions": d.n_audio_ctx, "d_model": d.n_audio_state,
        "encoder_attention_heads": d.n_audio_head, "encoder_layers": d.n_audio_layer,
        "encoder_ffn_dim": 4 * d.n_audio_state, "vocab_size": d.n_vocab, "max_target_positions": d.n_text_ctx,
        "decoder_attention_heads": d.n_text_head, "decoder_layers": d.n_text_layer,
        "decoder_ffn_dim": 4 * d.n_text_state, "activation_function": "gelu", "scale_embedding": False,
        "tie_word_embeddings": True,
    }
    state = model.state_dict()
    if any(NOISE_MARKER in k for k in state):
        log.warning("%s: Hugging Face's Whisper has no noise branch; exporting the model without it", folder)
    state = {k: v for k, v in state.items() if NOISE_MARKER not in k}
    tensors = {k: v.detach().cpu().contiguous() for k, v in to_huggingface(state).items()}
    save_file(tensors, str(folder / SAFETENSORS), metadata={"format": "pt"})
    (folder / CONFIG).write_text(json.dumps(config, indent=2))
    generation: dict = {"alignment_heads": [list(p) for p in heads_to_pairs(model.alignment_heads)]}
    extra = getattr(model, "checkpoint_extra", {})  # suppress ids the model was loaded with
    for ours, key in (("suppress_ids", "suppress_tokens"), ("suppress_ids_begin", "begin_suppress_tokens")):
        if ours in extra:
            generation[key] = list(extra[ours])
    (folder / GENERATION_CONFIG).write_text(json.dumps(generation, indent=2))
