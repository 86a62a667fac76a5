"""What only a CUDA GPU can show: mixed-precision training steps against fp32, the fused attention
kernels against the math path, fp16 decoding with the KV cache against fp32 on the CPU, and a
training step's memory against the estimate of training/memory.py. Skipped without a GPU;
`bench/gpu_check.sh` runs them on one. Random weights throughout (seeded): nothing to download."""
import re
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from whisper_scratch.inference.decoding import DecodingOptions, decode
from whisper_scratch.model.loaded import whisper_vocabulary
from whisper_scratch.model.whisper import SIZES, Whisper
from whisper_scratch.training.dataset import Example, collate
from whisper_scratch.training.loop import micro_batch_loss
from whisper_scratch.training.setup import autocast

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
REPO = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda")


def tiny_model(seed: int = 0) -> Whisper:
    torch.manual_seed(seed)
    return Whisper(SIZES["tiny"])


def batch(model: Whisper, n: int = 2, tokens: int = 24):
    """A micro-batch of random log-mels and label ids, as the training loop collates it."""
    g = torch.Generator().manual_seed(1)
    dims = model.dims
    examples = []
    for i in range(n):
        ids = torch.randint(0, 50000, (tokens + 1,), generator=g)
        mel = torch.randn(dims.n_mels, 2 * dims.n_audio_ctx, generator=g)
        examples.append(Example(mel=mel, tokens=ids[:-1], labels=ids[1:], path=f"clip{i}.wav"))
    return collate(examples)


def loss_and_grads(dtype: torch.dtype) -> tuple[float, torch.Tensor]:
    """One step's loss and flattened gradient on CUDA in `dtype` (fp16 through a gradient scaler,
    unscaled before reading, as the loop does)."""
    model = tiny_model().to(CUDA)
    b = batch(model)
    b.mel, b.tokens, b.labels = b.mel.to(CUDA), b.tokens.to(CUDA), b.labels.to(CUDA)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    optimizer = torch.optim.AdamW(model.parameters())
    with autocast(CUDA, dtype):
        loss = micro_batch_loss(model, b) / b.labels.numel()
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    return loss.item(), torch.cat([p.grad.flatten().float() for p in model.parameters()])


@pytest.mark.parametrize(("dtype", "loss_tol", "grad_tol"), [
    (torch.float16, 2e-3, 2e-2),  # 10 mantissa bits
    (torch.bfloat16, 1e-2, 6e-2),  # 7 mantissa bits
])
def test_a_mixed_precision_step_matches_fp32(dtype, loss_tol, grad_tol):
    """Loss within loss_tol relative, and the gradient within grad_tol in relative norm."""
    loss32, grad32 = loss_and_grads(torch.float32)
    loss, grad = loss_and_grads(dtype)
    assert torch.isfinite(grad).all()
    assert abs(loss - loss32) <= loss_tol * abs(loss32)
    assert (grad - grad32).norm() <= grad_tol * grad32.norm()


@pytest.mark.parametrize("backend", [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_attention_kernels_match_the_math_path(backend, dtype):
    """Training-mode logits and gradients of the whole model, the fused kernel forced against math."""
    model = tiny_model().to(CUDA, dtype)
    b = batch(model)
    mel, tokens = b.mel.to(CUDA, dtype), b.tokens.to(CUDA)
    results = {}
    for kernel in (SDPBackend.MATH, backend):
        model.zero_grad(set_to_none=True)
        with sdpa_kernel([kernel]):
            logits = model(mel, tokens)
            logits.float().logsumexp(-1).mean().backward()
        results[kernel] = (logits.detach().float(), model.decoder.blocks[0].attn.query.weight.grad.float())
    (logits_math, grad_math), (logits_fused, grad_fused) = results[SDPBackend.MATH], results[backend]
    tol = 2e-2 if dtype == torch.float16 else 8e-2
    assert (logits_fused - logits_math).abs().max() <= tol * logits_math.abs().max()
    assert (grad_fused - grad_math).norm() <= 5 * tol * grad_math.norm()


def test_fp16_decoding_on_cuda_follows_fp32_on_the_cpu():
    """Greedy decoding with the static KV cache in fp16 on CUDA gives the fp32 CPU tokens up to the
    first step where fp32's two best tokens are within 0.05 in log-probability (a near tie, which
    rounding may break either way); the divergence is bounded, not absent."""
    model = tiny_model(3)
    tokenizer = whisper_vocabulary(model)
    mel = torch.randn(2, model.dims.n_mels, 3000, generator=torch.Generator().manual_seed(2))
    options = DecodingOptions(language="en", sample_len=32, suppress_tokens=(tokenizer.eot,), without_timestamps=True)
    reference = decode(model, mel, options, tokenizer)
    on_cuda = decode(model.to(CUDA, torch.float16), mel.to(CUDA), options, tokenizer)
    model.float().cpu()
    start = [*tokenizer.start_sequence("en", "transcribe"), tokenizer.no_timestamps]
    for ref, got, row in zip(reference, on_cuda, mel):
        sequence = torch.tensor([start + ref.tokens])
        with torch.no_grad():
            logprobs = model(row[None], sequence)[0, len(start) - 1:-1].log_softmax(-1)
        top2 = logprobs.topk(2).values
        margins = (top2[:, 0] - top2[:, 1]).tolist()
        first_difference = next((i for i, (a, b) in enumerate(zip(ref.tokens, got.tokens)) if a != b), None)
        if first_difference is not None:
            assert margins[first_difference] < 0.05, (first_difference, margins[first_difference])
        print(f"fp16 CUDA tokens equal fp32 CPU tokens for {first_difference or len(ref.tokens)} of "
              f"{len(ref.tokens)} steps")


@pytest.mark.parametrize("card", ["6gb", "24gb"])
def test_a_training_steps_memory_is_the_estimate(card, capsys):
    """bench/preset_memory.py --device cuda: the real loop on worst-case clips, the allocator capped
    at the card's capacity, against the fake-tensor estimate: measured within 10 % of it."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import preset_memory
    finally:
        sys.path.remove(str(REPO / "bench"))
    code = preset_memory.main(["--preset", str(REPO / "configs/6gb.args"), "--size", "base", "--card", card,
                               "--device", "cuda", "--steps", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    measured = float(re.search(r"measured peak (\d+\.\d+) GiB", out).group(1))
    estimated = float(re.search(r"estimate (\d+\.\d+) GiB", out).group(1))
    print(out)
    assert abs(measured - estimated) <= 0.1 * estimated, (measured, estimated)


def test_training_on_cuda_picks_the_cards_precision():
    """--precision auto: bf16 from capability 8.0, else fp16 with a scaler (common/device.py)."""
    from whisper_scratch.common.device import pick_precision

    major, _ = torch.cuda.get_device_capability()
    expected = torch.bfloat16 if major >= 8 else torch.float16
    assert pick_precision("auto", CUDA) == expected
