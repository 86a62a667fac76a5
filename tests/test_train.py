"""The training loop on real speech fixtures: learning from scratch, exact resume, DDP parity,
the noise branch's gradients and frozen weights, and bad data."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from whisper_scratch.checkpoint import load_checkpoint, save_model
from whisper_scratch.model import ModelDimensions, Whisper, _GeluLinear
from whisper_scratch.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
ASTERISK = REPO / "tests/data/asterisk16/manifest.jsonl"
CV_TINY = REPO / "tests/data/cv_tiny"
# A small model over 3 s windows: big enough to learn 16 clips, small enough for a 2-core CPU.
SMALL = ["--whisper-size", "tiny", "--audio-ctx", "150", "--text-ctx", "48", "--width", "128", "--heads", "4",
         "--layers", "2", "--vocab-size", "400", "--num-workers", "0", "--language", "en"]


def asterisk_args(out: Path, steps: int, *extra: str) -> list[str]:
    return ["--train-manifest", str(ASTERISK), "--eval-manifest", str(ASTERISK), *SMALL,
            "--max-steps", str(steps), "--output-dir", str(out), "--log-every", "1", *extra]


def losses(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(folder / "model.pt").state_dict


def test_from_scratch_reaches_zero_wer(tmp_path):
    """SentencePiece vocabulary + random tiny model, 16 real clips: WER 0 on those clips."""
    out = tmp_path / "scratch"
    code = train.main(asterisk_args(out, 300, "--train-batch-size", "16", "--learning-rate", "3e-3",
                                    "--warmup-steps", "10", "--eval-every", "100", "--save-every", "100",
                                    "--no-eval-before"))
    assert code == 0
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "eval_wer" in line]
    assert evals[-1]["eval_wer"] == 0.0
    assert (out / "training_curves.png").stat().st_size > 0
    assert (out / "best" / "spm.model").is_file()  # transcribe.py finds the vocabulary beside the weights


def test_scoring_flag_reaches_the_config():
    assert train.config_from_args(train.parse_args(asterisk_args(Path("out"), 1))).scoring == "standard"
    assert train.config_from_args(train.parse_args(asterisk_args(Path("out"), 1, "--scoring", "lenient"))).scoring \
        == "lenient"


def run_cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_resume_after_interrupt_is_exact(tmp_path):
    """SIGINT mid-run saves; --resume continues to the same losses and bit-identical weights."""
    common = ["--train-batch-size", "4", "--learning-rate", "1e-3", "--warmup-steps", "2",
              "--eval-every", "1000", "--save-every", "1000", "--no-eval-before", "--spec-augment", "--noise"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert train.main(asterisk_args(full, 12, *common)) == 0

    proc = run_cli(asterisk_args(cut, 12, *common))
    deadline = time.time() + 120
    while time.time() < deadline and not ((cut / "metrics.jsonl").is_file() and len(losses(cut)) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    stopped_at = losses(cut)[-1][0]
    assert 3 <= stopped_at < 12, output

    assert train.main(asterisk_args(cut, 12, *common, "--resume")) == 0
    assert losses(cut) == losses(full)
    a, b = weights(full / "last"), weights(cut / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ddp_two_processes_equal_one_with_double_batch(tmp_path):
    """torchrun, gloo, 2 ranks x batch 4 == 1 process x batch 8 (gradients averaged over ranks)."""
    common = ["--learning-rate", "1e-3", "--warmup-steps", "2", "--eval-every", "1000", "--save-every", "1000",
              "--no-eval-before", "--device", "cpu"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert train.main(asterisk_args(one, 4, "--train-batch-size", "8", *common)) == 0
    tok = ["--tokenizer-dir", str(one / "tokenizer")]  # same vocabulary, so the same random init
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           str(REPO / "train.py"), *asterisk_args(two, 4, "--train-batch-size", "4", *common, *tok)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [l for _, l in losses(two)] == pytest.approx([l for _, l in losses(one)], rel=1e-5)
    a, b = weights(one / "last"), weights(two / "last")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_dual_attention_trains_only_the_noise_branch(tmp_path):
    """From a plain checkpoint with --dual-attention and frozen encoder and decoder: the gate and
    noise branch get gradients and change; every frozen weight is bit-identical."""
    first = tmp_path / "first"
    assert train.main(asterisk_args(first, 2, "--train-batch-size", "8", "--no-eval-before",
                                    "--eval-every", "1000")) == 0
    args = ["--init", str(first / "last"), "--dual-attention", "--freeze-encoder", "--freeze-decoder",
            "--train-manifest", str(ASTERISK), "--eval-manifest", str(ASTERISK), "--language", "en",
            "--num-workers", "0", "--max-steps", "6", "--train-batch-size", "8", "--learning-rate", "1e-2",
            "--warmup-steps", "1", "--no-eval-before", "--eval-every", "1000", "--output-dir", str(tmp_path / "dual"),
            "--noise"]
    trainer = Trainer(train.config_from_args(train.parse_args(args)))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    noise = [k for k in before if ".noise_" in k]
    assert noise and {k.split(".")[3] for k in noise} == {"noise_cross_attn", "noise_cross_attn_ln", "noise_gate"}
    assert trainer.run()["step"] == 6
    after = trainer.model.state_dict()
    assert [k for k in noise if torch.equal(before[k], after[k])] == []  # all moved: all got gradients
    assert [k for k in before if k not in noise and not torch.equal(before[k], after[k])] == []
    saved = weights(tmp_path / "dual" / "last")
    assert all(torch.equal(saved[k], after[k]) for k in after)


def make_bad_cv(tmp_path: Path) -> Path:
    """cv_tiny with a missing clip, a corrupt mp3 and a transcript of excluded characters."""
    cv = tmp_path / "cv"
    shutil.copytree(CV_TINY, cv)
    lines = (cv / "train.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    cols = header.split("\t")
    p, s = cols.index("path"), cols.index("sentence")

    def row(path: str, sentence: str) -> str:
        cells = rows[0].split("\t")
        cells[p], cells[s] = path, sentence
        return "\t".join(cells)

    (cv / "clips" / "corrupt.mp3").write_bytes(b"ID3\x03\x00\x00\x00" + os.urandom(2000))
    rows += [row("missing.mp3", "chybějící nahrávka"), row("corrupt.mp3", "poškozená nahrávka"),
             row(rows[0].split("\t")[p], "12345 !!!")]
    (cv / "train.tsv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return cv


CZECH_CHARS = " aábcčdďeéěfghiíjklmnňoópqrřsštťuúůvwxyýzž"


def test_bad_common_voice_folder_trains_and_reports(tmp_path, capsys):
    cv = make_bad_cv(tmp_path)
    args = ["--local-data-dir", str(cv), "--language", "cs", "--keep-chars", CZECH_CHARS, *SMALL[:-2],
            "--max-steps", "3", "--train-batch-size", "4", "--output-dir", str(tmp_path / "out"),
            "--no-eval-before", "--eval-every", "1000"]
    assert train.main(args) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "empty_after_keep_chars" in text  # the excluded-characters row is counted
    assert "missing.mp3" in text and "corrupt.mp3" in text  # each bad clip named


def test_empty_split_stops_with_its_name(tmp_path, capsys):
    cv = make_bad_cv(tmp_path)
    (cv / "dev.tsv").write_text((cv / "dev.tsv").read_text().splitlines()[0] + "\n")
    code = train.main(["--local-data-dir", str(cv), "--language", "cs", *SMALL[:-2], "--max-steps", "2",
                       "--output-dir", str(tmp_path / "out")])
    assert code == 2
    assert "dev.tsv" in capsys.readouterr().err


def test_all_clips_unreadable_never_trains_on_nothing(tmp_path, capsys):
    cv = tmp_path / "cv"
    shutil.copytree(CV_TINY, cv)
    for clip in (cv / "clips").iterdir():
        clip.write_bytes(b"not audio")
    code = train.main(["--local-data-dir", str(cv), "--language", "cs", *SMALL[:-2], "--max-steps", "2",
                       "--output-dir", str(tmp_path / "out"), "--no-eval-before"])
    assert code != 0
    assert "no training clip could be read" in capsys.readouterr().err


def test_plain_model_checkpoint_loads_strictly_into_train_init(tmp_path):
    """--init takes any checkpoint the core loads: here our own format from a random model."""
    dims = ModelDimensions(80, 150, 64, 2, 1, 51864, 48, 64, 2, 1)
    save_model(Whisper(dims), tmp_path / "init")
    out = tmp_path / "ft"
    code = train.main(["--init", str(tmp_path / "init"), "--train-manifest", str(ASTERISK),
                       "--eval-manifest", str(ASTERISK), "--num-workers", "0", "--max-steps", "1",
                       "--train-batch-size", "2", "--output-dir", str(out), "--no-eval-before",
                       "--eval-every", "1000", "--max-eval-utterances", "2"])
    assert code == 0
    assert weights(out / "last").keys() == Whisper(dims).state_dict().keys()


def test_mlp_backward_recomputing_gelu_gives_autograd_gradients():
    """The MLP keeps fc1's output, not the GELU's, for backward: gradients must equal those of the
    plain fc2(gelu(fc1(h))) graph, bit for bit in fp32, and training under autocast must work."""
    dims = ModelDimensions(n_mels=8, n_audio_ctx=50, n_audio_state=32, n_audio_head=2, n_audio_layer=2,
                           n_vocab=51864, n_text_ctx=8, n_text_state=32, n_text_head=2, n_text_layer=2)
    torch.manual_seed(0)
    model = Whisper(dims)
    fc1, _, fc2 = model.encoder.blocks[0].mlp
    h = torch.randn(2, 50, 32, requires_grad=True)
    leaves = (h, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    plain = model.encoder.blocks[0].mlp(h)
    plain.square().sum().backward()
    expected = [t.grad.clone() for t in leaves]
    for t in leaves:
        t.grad = None
    ours = _GeluLinear.apply(fc1(h), fc2.weight, fc2.bias)
    ours.square().sum().backward()
    assert torch.equal(ours, plain)
    assert all(torch.equal(t.grad, e) for t, e in zip(leaves, expected))
    mel, tokens = torch.randn(2, 8, 100), torch.randint(0, 50000, (2, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(mel, tokens).float().square().mean()
    loss.backward()
    assert fc2.weight.grad.dtype == torch.float32 and torch.isfinite(fc2.weight.grad).all()


def test_gradient_checkpointing_gives_the_same_gradients():
    """Per-block checkpointing (attention outputs kept, the rest recomputed) changes memory, not math."""
    dims = ModelDimensions(n_mels=8, n_audio_ctx=50, n_audio_state=32, n_audio_head=2, n_audio_layer=2,
                           n_vocab=51864, n_text_ctx=8, n_text_state=32, n_text_head=2, n_text_layer=2)
    torch.manual_seed(0)
    model = Whisper(dims, dual_attention=True).train()
    mel, tokens = torch.randn(2, 8, 100), torch.randint(0, 50000, (2, 6))
    grads = []
    for enabled in (False, True):
        model.zero_grad()
        model.set_gradient_checkpointing(enabled)
        model(mel, tokens).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(model.parameters()))
    assert all(torch.allclose(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-7) for n in grads[0])
