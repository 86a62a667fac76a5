"""Hugging Face Whisper folders: config.json + model.safetensors (or pytorch_model.bin, or either
sharded with an index file), optional generation_config.json."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import Tensor

from ...audio.geometry import HOP_LENGTH, N_FFT, SAMPLE_RATE
from ...common.files import atomic_open, write_json
from ...tokenizer import WhisperTokenizer
from ...tokenizer.huggingface import huggingface_tokenizer_files
from ...tokenizer.suppression import blank_tokens, suppressed_tokens
from ..whisper import ModelDimensions, Whisper
from . import (
    Checkpoint,
    CheckpointError,
    exportable_state,
    heads_to_pairs,
    invert,
    rename,
    safe_torch_load,
    tokenizer_extra,
)

CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
PREPROCESSOR_CONFIG = "preprocessor_config.json"
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


def preprocessor_config(dims: ModelDimensions) -> dict:
    """WhisperFeatureExtractor's settings for a model of `dims` (read by transformers and faster-whisper)."""
    n_frames = 2 * dims.n_audio_ctx
    return {"feature_extractor_type": "WhisperFeatureExtractor", "processor_class": "WhisperProcessor",
            "feature_size": dims.n_mels, "sampling_rate": SAMPLE_RATE, "hop_length": HOP_LENGTH, "n_fft": N_FFT,
            "chunk_length": n_frames * HOP_LENGTH // SAMPLE_RATE, "n_samples": n_frames * HOP_LENGTH,
            "nb_max_frames": n_frames, "padding_side": "right", "padding_value": 0.0,
            "return_attention_mask": False}


def _generation_config(model: Whisper, tk: WhisperTokenizer | None, language: str | None) -> dict:
    """generation_config.json: alignment heads and, with a tokenizer, Whisper's token ids."""
    generation: dict = {"alignment_heads": [list(p) for p in heads_to_pairs(model.alignment_heads)]}
    if tk is None:
        return generation
    generation.update({
        "bos_token_id": tk.eot, "eos_token_id": tk.eot, "pad_token_id": tk.eot, "decoder_start_token_id": tk.sot,
        "no_timestamps_token_id": tk.no_timestamps, "prev_sot_token_id": tk.sot_prev,
        "max_initial_timestamp_index": 50, "max_length": model.dims.n_text_ctx, "return_timestamps": False,
        "suppress_tokens": suppressed_tokens(tk, "-1", model.dims.n_vocab),
        "begin_suppress_tokens": blank_tokens(tk), "is_multilingual": tk.is_multilingual})
    if tk.is_multilingual:
        generation["lang_to_id"] = {f"<|{code}|>": tk.to_language_token(code) for code in tk.all_language_codes}
        generation["task_to_id"] = {"transcribe": tk.transcribe, "translate": tk.translate}
        if language:  # the language the model was fine-tuned on: transformers then skips detection
            generation.update(language=f"<|{language}|>", task="transcribe")
    return generation


def save_huggingface(model: Whisper, folder: str | Path, tokenizer: WhisperTokenizer | None = None,
                     dtype: torch.dtype = torch.float32, drop_noise_branch: bool = False,
                     language: str | None = None) -> None:
    """Write `model` as a Hugging Face folder that transformers loads (and the CTranslate2 and
    whisper.cpp converters read): config.json, model.safetensors (in `dtype`),
    generation_config.json (alignment heads; with a tokenizer also the suppressed, language and
    task ids, and `language` as the default), preprocessor_config.json and, with a tokenizer, its
    files. Every file is written atomically."""
    folder = Path(folder)
    d = model.dims
    if d.n_audio_state != d.n_text_state:
        raise ValueError("Hugging Face's Whisper has one d_model for encoder and decoder")
    state = exportable_state(model, drop_noise_branch, str(folder))
    tensors = {k: v.to(dtype).contiguous() for k, v in to_huggingface(state).items()}
    with atomic_open(folder / SAFETENSORS) as f:
        f.write(save(tensors, metadata={"format": "pt"}))
    config = {
        "model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"],
        "num_mel_bins": d.n_mels, "max_source_positions": d.n_audio_ctx, "d_model": d.n_audio_state,
        "encoder_attention_heads": d.n_audio_head, "encoder_layers": d.n_audio_layer,
        "encoder_ffn_dim": 4 * d.n_audio_state, "vocab_size": d.n_vocab, "max_target_positions": d.n_text_ctx,
        "decoder_attention_heads": d.n_text_head, "decoder_layers": d.n_text_layer,
        "decoder_ffn_dim": 4 * d.n_text_state, "num_hidden_layers": d.n_audio_layer,
        "activation_function": "gelu", "scale_embedding": False, "tie_word_embeddings": True,
        "use_cache": True, "dtype": str(dtype).removeprefix("torch."),
    }
    if tokenizer is not None:
        config.update(bos_token_id=tokenizer.eot, eos_token_id=tokenizer.eot, pad_token_id=tokenizer.eot,
                      decoder_start_token_id=tokenizer.sot)
        for name, content in huggingface_tokenizer_files(tokenizer).items():
            write_json(folder / name, content)
    write_json(folder / CONFIG, config)
    write_json(folder / GENERATION_CONFIG, _generation_config(model, tokenizer, language))
    write_json(folder / PREPROCESSOR_CONFIG, preprocessor_config(d))
