"""The GPU memory estimate of a training preset (whisper_scratch/training/memory.py and
bench/preset_memory.py), checked without a GPU: the fake-tensor trace against the same trace on
real tensors, the allocator model against the rules it copies, the math attention path against
the matrices it keeps, the 6 GB presets against their card, and the largest-batch search."""
import re
import sys
from pathlib import Path

import pytest
import torch

from whisper_scratch.cli.train import config_from_args, parse_args
from whisper_scratch.model.whisper import SIZES
from whisper_scratch.training.memory import CARDS, CachingAllocator, CardClass, GiB, MiB, estimate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import preset_memory  # noqa: E402

sys.path.remove(str(REPO / "bench"))


def config(preset: str = "configs/6gb.args", *flags: str):
    return config_from_args(parse_args([f"@{REPO / preset}", "--language", "cs", *flags]))


SHORT = ("--train-batch-size", "2", "--eval-batch-size", "2", "--max-duration", "4", "--max-label-tokens", "24")


@pytest.mark.parametrize(("card", "flags", "run_eval"), [
    ("24gb", (), False),  # bf16, flash attention with its CUDA scratch
    ("6gb", ("--precision", "fp32"), True),  # math attention (fp32: the CPU's fp16 matmuls are slow), evaluation
])
def test_the_fake_trace_allocates_what_real_tensors_do(card, flags, run_eval):
    """Tolerance 1 %: the same code on the same shapes, so only a kernel that lays out its output
    otherwise than its fake twin could make them differ."""
    cfg = config("configs/6gb.args", *SHORT, *flags)
    fake = estimate(cfg, SIZES["tiny"], CARDS[card], fake=True, host="cpu", run_eval=run_eval)
    real = estimate(cfg, SIZES["tiny"], CARDS[card], fake=False, host="cpu", run_eval=run_eval)
    assert fake.peak_allocated == pytest.approx(real.peak_allocated, rel=0.01)
    assert fake.peak_reserved == pytest.approx(real.peak_reserved, rel=0.01)
    assert fake.phase_peaks.keys() == real.phase_peaks.keys()
    for phase, peak in real.phase_peaks.items():
        assert fake.phase_peaks[phase] == pytest.approx(peak, rel=0.01), phase
    # Weights, gradients and AdamW states are what the parameters say.
    tiny = _tiny_on_meta()
    n_bytes = 4 * sum(p.numel() for p in tiny.parameters())
    n_buffers = sum(b.numel() * b.element_size() for b in tiny.buffers())  # the positional embeddings
    assert real.breakdown["weights"] == pytest.approx(n_bytes + n_buffers, rel=0.01)
    assert real.breakdown["AdamW states"] in (0, pytest.approx(2 * n_bytes, rel=0.01))


def _tiny_on_meta():
    from whisper_scratch.model.whisper import Whisper
    with torch.device("meta"):
        return Whisper(SIZES["tiny"])


def test_the_allocator_model_follows_the_cuda_caching_allocators_rules():
    a = CachingAllocator(tight=False)
    small = a.malloc(1000)
    assert small.size == 1024 and a.reserved == 2 * MiB  # 512-byte rounding, a 2 MiB small segment
    assert a.malloc(0) is None and a.allocated == 1024
    big = a.malloc(3 * MiB)
    assert a.reserved == 22 * MiB  # below 10 MiB: a 20 MiB segment, split
    after = a.malloc(3 * MiB)
    assert a.reserved == 22 * MiB and after.address == big.address + 3 * MiB  # served from the split rest
    a.free(big)
    a.free(after)
    again = a.malloc(19 * MiB)  # the freed pieces merged back into the whole segment
    assert again.address == big.address and a.reserved == 22 * MiB
    huge = a.malloc(11 * MiB + 1)
    assert a.reserved == 22 * MiB + 12 * MiB  # its own segment, rounded to 2 MiB
    a.free(huge)
    a.malloc(13 * MiB)
    assert a.reserved == 22 * MiB + 12 * MiB + 14 * MiB  # no cached block holds it: a new segment
    # A rest of at most 1 MiB in the large pool is not split off: the block counts whole, as in torch.
    assert again.size == 20 * MiB and huge.size == 12 * MiB
    assert a.peak_allocated == a.allocated == 1024 + 20 * MiB + 14 * MiB

    tight = CachingAllocator(tight=True)
    tight.free(tight.malloc(12 * MiB))
    tight.malloc(13 * MiB)
    assert tight.reserved == 14 * MiB and tight.peak_reserved == 14 * MiB  # the free segment went back first


def test_math_attention_costs_the_attention_matrices_more_than_flash():
    """A 7.5 card keeps each attention's probabilities, a (B, H, Tq, Tk) fp32 matrix, and fp32
    copies of its queries, keys and values for backward; flash keeps a (B, H, Tq) row. Same precision
    on both cards, so that the attention path is the only difference."""
    dims = SIZES["tiny"]
    batch, tokens = 2, 64
    cfg = config("configs/6gb.args", "--train-batch-size", str(batch), "--grad-accum", "1", "--max-label-tokens",
                 str(tokens), "--precision", "fp16")
    math_card, flash_card = CARDS["6gb"], CardClass("flash", 5.5, (8, 0))
    math_peak = estimate(cfg, dims, math_card, run_eval=False).phase_peaks["step 2"]
    flash_peak = estimate(cfg, dims, flash_card, run_eval=False).phase_peaks["step 2"]
    audio = 1800 // 2  # 15 s clips trimmed to 1800 mel frames: 900 encoder positions
    pairs = [(audio, audio)] * dims.n_audio_layer + [(tokens, tokens), (tokens, audio)] * dims.n_text_layer
    heads, d_head = dims.n_audio_head, dims.n_audio_state // dims.n_audio_head
    matrices = sum(4 * batch * heads * tq * tk for tq, tk in pairs)
    copies = sum(4 * batch * heads * (tq + 2 * tk) * d_head for tq, tk in pairs)
    assert matrices < math_peak - flash_peak < 1.25 * (matrices + copies)


@pytest.mark.parametrize(("preset", "size"), [("configs/6gb.args", "base"), ("configs/6gb_lowmem.args", "small")])
def test_the_6gb_presets_fit_a_6gb_card(preset, size):
    est = estimate(config(preset), SIZES[size], CARDS["6gb"])
    assert est.total < 5.5 * GiB and est.fits
    assert est.total == est.peak_reserved + est.context and est.peak_reserved >= est.peak_allocated
    assert sum(est.breakdown.values()) == est.peak_allocated


def test_the_last_line_ends_in_the_peak(capsys):
    flags = ["--preset", str(REPO / "configs/6gb.args"), "--size", "tiny", "--card", "24gb", "--batch", "2"]
    assert preset_memory.main(["--estimate", *flags]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.search(r"peak (\d+\.\d\d) GiB$", last)
    assert match, last
    est = estimate(config(), SIZES["tiny"], CARDS["24gb"], batch=2)
    assert float(match.group(1)) == pytest.approx(est.total / GiB, abs=0.006)
    assert "fits" in last and "batch 2" in last


def test_the_largest_batch_search_finds_the_boundary():
    def line(b: int) -> int:
        return 40 + 7 * b + 5 * (b % 3)  # close to a line, not on it

    for capacity in (30, 47, 100, 101, 1000, 5000):
        traced = []
        best = preset_memory.largest_batch(lambda b: traced.append(b) or line(b), capacity, start=8, limit=600)
        assert best == max([b for b in range(1, 601) if line(b) <= capacity], default=0), capacity
        assert len(traced) <= 8, (capacity, traced)  # a few traces, not a walk


def test_the_largest_batch_fits_and_one_more_does_not():
    cfg, dims = config("configs/6gb.args"), SIZES["tiny"]
    sizes = {}
    for name in ("6gb", "12gb"):
        card = CARDS[name]
        traces = {}

        def peak(b: int) -> int:
            traces[b] = estimate(cfg, dims, card, batch=b).total
            return traces[b]

        best = preset_memory.largest_batch(peak, int(card.capacity_gib * GiB), cfg.train_batch_size)
        assert best > 0 and traces[best] <= card.capacity_gib * GiB
        over = traces.get(best + 1) or peak(best + 1)
        assert over > card.capacity_gib * GiB
        sizes[name] = best
        assert all(traces[a] <= traces[b] for a in traces for b in traces if a < b)  # the peak grows with the batch
    assert sizes["12gb"] > sizes["6gb"]
