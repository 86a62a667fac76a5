"""Transcribe or evaluate with any checkpoint we load (OpenAI .pt, Hugging Face, CTranslate2, ours).

  python transcribe.py --model_path base --audio_path clip.flac
  python transcribe.py --model_path ckpt/ --mode directory --audio_dir clips/ --output_file out.json
  python transcribe.py --model_path ckpt/ --mode batch --manifest test.jsonl --output_file out.tsv
  python transcribe.py --model_path base --mode evaluate --manifest test.jsonl --output_file eval.json
  python transcribe.py --model_path base --audio_path clip.flac --output_dir out/ --output_format all
  python transcribe.py --model_path base --mode evaluate --dataset my_saved_dataset --split test
  python transcribe.py --model_path ckpt/ --language cs --beam_size 5 --lm cs.arpa --audio_path clip.flac

modes:
  single     one --audio_path; its text goes to stdout (or --output_file)
  directory  every audio file below --audio_dir (plus any --audio_path / --manifest files)
  batch      the audio of --manifest, --audio_dir and/or --audio_path, in batches of --batch_size
  evaluate   transcribe the clips of --manifest (or --reference_file, or a Hugging Face --dataset)
             and score them against the listed text: prints WER and CER (--scoring, default standard:
             openai-whisper's normaliser and plain jiwer); --output_file must be .json and receives
             {"wer", "cer", "utterances": [{"audio", "reference", "hypothesis"}]}. With --noise_dir,
             also under noise at each --snr: a table of WER/CER per condition (clean first), and
             "noise" and "conditions" in the JSON
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..audio.io import AUDIO_EXTENSIONS, AudioError, load_audio, printable
from ..audio.noise import NoiseMixer
from ..common.device import cuda_problem
from ..common.files import unwritable
from ..common.messages import one_line
from ..common.precision import DTYPES
from ..data.hf_dataset import read_dataset
from ..data.manifest import ManifestError, Utterance, collect_audio, read_manifest
from ..evaluation.listing import listed_language, score_runs, write_report
from ..evaluation.metrics import SCORINGS
from ..evaluation.noisy import NoisyRun, format_table, parse_snrs, transcribe_noisy
from ..inference.batched import transcribe_files_batched
from ..inference.decoding import DecodingOptions, FallbackOptions, WordScorer
from ..inference.options import Interrupted, TranscribeOptions, fast_dtype
from ..inference.timing import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS
from ..inference.transcriber import transcribe_files
from ..inference.vad import VadUnavailable, silero_weights_path
from ..inference.writers import (
    SUBTITLE_EXTENSIONS,
    SUPPORTED_EXTENSIONS,
    LineOptions,
    needs_timestamps,
    per_audio_targets,
    write_results,
)
from ..lm.arpa import ArpaError
from ..lm.fusion import BACKENDS, CachedScorer, read_lm, scorer_for, vocabulary_overlap
from ..lm.tune import STORED, read_stored
from ..model.formats import name_list
from ..model.loaded import LoadedModel, ModelError
from ..model.quantize import QUANTIZATIONS

OUTPUT_FORMATS = tuple(ext.lstrip(".") for ext in SUPPORTED_EXTENSIONS)

# Exit codes (also in --help).
OK, UNREADABLE, USAGE, INTERRUPTED = 0, 1, 2, 130
# --lm_alpha / --lm_beta when not given: a starting point, to be tuned on a dev split (docs/lm.md).
LM_ALPHA, LM_BETA = 0.5, 1.0
# Below this share of known words an LM is probably of another language (or another normaliser).
LM_OVERLAP_WARNING = 0.5

EPILOG = f"""\
output (--output_file, format chosen by the extension: {', '.join(SUPPORTED_EXTENSIONS)}):
  .txt   the text; with several files one "audio<TAB>text" line each
  .json  a list of {{"audio", "text", "language", "segments", "duration"}}
  .tsv   start<TAB>end<TAB>text in ms (Whisper's layout), with a leading audio column for several files
  .srt / .vtt  subtitles hold one audio file each. In single mode the file named is written. In
         directory and batch modes the name only gives the folder and the format: one subtitle
         file per audio is written into that folder, named after the audio (clips/a.flac ->
         OUTDIR/a.srt); subfolders of the input are kept (clips/x/b.wav -> OUTDIR/x/b.srt), and
         two audio files that differ only in extension keep it (a.wav -> a.wav.srt).
  without --output_file: single prints the text; directory and batch print "audio<TAB>text" lines.

long recordings (over 30 s):
  Transcribed window by window as openai-whisper's transcribe() does, always with timestamps: each
  window starts where the last complete segment of the one before ended, and (unless
  --condition_on_previous_text False) the text so far prompts it. A progress bar counts audio
  seconds. A recording that fails part-way (or Ctrl-C) keeps the windows done: they are written,
  and the file is listed as "skipped: ... decoding stopped at ...".

bad audio:
  A missing, empty, undecodable or sample-less file is reported in one line on stderr. In single
  mode nothing else happens. In directory and batch modes the other files are still transcribed
  and written, and each bad one is listed as "skipped: <reason>". In evaluate mode a bad clip
  counts as an empty hypothesis (so it costs WER) and is listed the same way. A clip with NaN or
  infinite samples, and a link that loops or leads nowhere, are bad audio too. A file name that is
  not UTF-8 is transcribed, and written with its odd bytes as \\xNN. Silent audio is not an error:
  it gives empty text. evaluate warns about rows whose reference text is empty.

exit status:
  {OK}    every audio file was transcribed
  {UNREADABLE}    some audio could not be read (listed on stderr); in directory, batch and evaluate
       modes everything else was transcribed and written
  {USAGE}    bad arguments, or a missing model / manifest / audio folder, or an output file or
       folder that cannot be written (all found before any transcribing); an output that still
       fails to be written is printed to stdout instead, so nothing decoded is lost
  {INTERRUPTED}  interrupted (Ctrl-C); the transcripts done so far are written (not in evaluate mode)
"""


class CliError(Exception):
    """A problem with the command line or its inputs: one line on stderr, exit status 2."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="transcribe.py", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # The original project's underscore flags, with dash spellings as aliases.
    p.add_argument("--model_path", "--model-path", "--model", default="base",
                   help="a local checkpoint: an OpenAI/our .pt file, or a folder with model.pt (ours), "
                        "config.json + model.bin (CTranslate2) or config.json + model.safetensors "
                        "(Hugging Face); or a size name (tiny, base, ..., large-v3-turbo) to download "
                        "(default: base)")
    p.add_argument("--mode", choices=["single", "directory", "batch", "evaluate"], default="single")
    p.add_argument("--audio_path", "--audio-path", action="append", default=[],
                   help="audio file; repeatable in directory and batch modes")
    p.add_argument("--audio_dir", "--audio-dir",
                   help=f"folder searched recursively for {' '.join(AUDIO_EXTENSIONS)} (directory and batch modes)")
    p.add_argument("--manifest", help="JSONL {audio, text} / CSV / Common Voice .tsv listing (batch, directory "
                                      "and evaluate); audio paths are relative to the listing")
    p.add_argument("--reference_file", "--reference-file",
                   help="evaluate: the references, same formats as --manifest (give one of the two)")
    p.add_argument("--dataset", help="evaluate: a Hugging Face dataset instead of a listing: a save_to_disk "
                                     "folder, a folder of parquet/arrow shards or an audiofolder, or a Hub name")
    p.add_argument("--dataset_config", "--dataset-config", help="the dataset's Hub configuration (e.g. a language)")
    p.add_argument("--split", default="test", help="the dataset split to evaluate (default test)")
    p.add_argument("--audio_column", "--audio-column", default="audio", help="the dataset's audio column")
    p.add_argument("--text_column", "--text-column",
                   help="the dataset's transcript column (default: text, sentence, transcription or transcript)")
    p.add_argument("--output_file", "--output-file",
                   help="txt, json, srt, vtt or tsv, chosen by extension (see below); evaluate: .json")
    p.add_argument("--output_dir", "--output-dir", default=None,
                   help="write one file per audio and format into this folder, named after the audio "
                        "(clips/a.flac -> OUTPUT_DIR/a.srt), as openai-whisper's command line does")
    p.add_argument("--output_format", "--output-format", choices=[*OUTPUT_FORMATS, "all"], default=None,
                   help="with --output_dir (default all formats); alone it writes into the current folder")
    p.add_argument("--language", default=None,
                   help="language code or name (en, de, German); default: detect (multilingual models)")
    p.add_argument("--task", choices=["transcribe", "translate"], default="transcribe",
                   help="translate: speech in any language to English text (multilingual models)")
    p.add_argument("--beam_size", "--beam-size", type=int, default=None, help="beam search width (default greedy)")
    p.add_argument("--best_of", "--best-of", type=int, default=5,
                   help="samples per clip at each fallback temperature; the most likely is kept (default 5, "
                        "as in openai-whisper's and faster-whisper's command lines)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fallback sampler: a run repeats exactly")
    p.add_argument("--batch_size", "--batch-size", type=int, default=8,
                   help="clips decoded together (directory, batch, evaluate; default 8)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="default fp16 on GPU, fp32 on CPU")
    p.add_argument("--quantize", choices=list(QUANTIZATIONS), default=None,
                   help="CPU: every linear layer and the output projection with fp16 weights (fp32 arithmetic: "
                        "near fp32's tokens, faster decoding) or int8 weights and activations (fastest; changes "
                        "words; docs/benchmarks.md). Torch's quantized kernels")
    p.add_argument("--compile", action="store_true",
                   help="decode each token through torch.compile (a static cache; CUDA graphs on a GPU): the "
                        "first windows wait for the compiler; may change tokens; on the CPUs measured it is not "
                        "faster (docs/benchmarks.md)")
    p.add_argument("--timestamps", action="store_true", help="decode segment timestamps (implied by srt/vtt/tsv)")
    p.add_argument("--initial_prompt", "--initial-prompt", default=None, help="text to condition the first window on")
    p.add_argument("--condition_on_previous_text", "--condition-on-previous-text", type=_bool, nargs="?",
                   const=True, default=True, metavar="BOOL",
                   help="long recordings: prompt each window with the text before it (default True; False "
                        "makes windows independent, less prone to a repetition loop carrying on)")
    p.add_argument("--clip_timestamps", "--clip-timestamps", type=_clip_timestamps, default=(),
                   metavar="START,END,...",
                   help="transcribe only these parts (seconds): start,end,start,end,...; an odd count's last "
                        "part runs to the end")
    p.add_argument("--word_timestamps", "--word-timestamps", type=_bool, nargs="?", const=True, default=False,
                   metavar="BOOL", help="word-level timestamps (\"words\" in json; subtitles cut by word); "
                                        "implies --timestamps")
    p.add_argument("--prepend_punctuations", "--prepend-punctuations", default=PREPEND_PUNCTUATIONS,
                   help="word timestamps: these join the word after them")
    p.add_argument("--append_punctuations", "--append-punctuations", default=APPEND_PUNCTUATIONS,
                   help="word timestamps: these join the word before them")
    p.add_argument("--max_line_width", "--max-line-width", type=int, default=None,
                   help="word timestamps: characters per subtitle line (srt, vtt, tsv)")
    p.add_argument("--max_line_count", "--max-line-count", type=int, default=None,
                   help="word timestamps: lines per subtitle (with --max_line_width)")
    p.add_argument("--highlight_words", "--highlight-words", type=_bool, nargs="?", const=True, default=False,
                   metavar="BOOL", help="word timestamps: underline each word as it is spoken (srt, vtt)")
    p.add_argument("--hallucination_silence_threshold", "--hallucination-silence-threshold", type=float,
                   default=None, metavar="SECONDS",
                   help="word timestamps: skip silences longer than this around text that looks invented")
    p.add_argument("--no_fallback", "--no-fallback", action="store_true", help="greedy only, no temperature fallback")
    p.add_argument("--trim_padding", "--trim-padding", action="store_true",
                   help="faster on clips under 30 s (and, with --batched, on chunks under 30 s): encode only the "
                        "clip's frames (rounded up to 2 s) and take the rest of the window from a precomputed "
                        "padding window; may differ token by token from the full window (see docs/benchmarks.md)")
    p.add_argument("--silence_padding", "--silence-padding", action="store_true",
                   help="pad clips under 30 s with silence before the log-mel (as Whisper was trained) instead "
                        "of with zero frames (as openai-whisper and faster-whisper do): far fewer errors on "
                        "short clips; transcripts differ from the reference implementations'")
    p.add_argument("--fast", action="store_true",
                   help="--trim_padding --silence_padding, and on a CPU --dtype bf16 where it computes bf16 itself (AMX, "
                        "AVX-512 BF16), else fp32 (unless --dtype is given)")
    p.add_argument("--batched", action="store_true",
                   help="Silero VAD cuts each recording's speech into chunks of up to 30 s, decoded --batch_size "
                        "at a time without the previous text as prompt (faster-whisper's batched mode; needs "
                        "pip install 'whisper-scratch[vad]')")
    p.add_argument("--lm", default=None, metavar="LM.arpa",
                   help="an n-gram language model (ARPA, .gz too; built with whisper-scratch lm build) fused into "
                        "beam search (needs --beam_size): each word gains lm_alpha * ln p_LM + lm_beta (docs/lm.md)")
    p.add_argument("--lm_alpha", "--lm-alpha", type=float, default=None,
                   help=f"with --lm: weight of the LM's natural-log probability (default: the pair lm tune --save stored "
                        f"beside the model, else {LM_ALPHA})")
    p.add_argument("--lm_beta", "--lm-beta", type=float, default=None,
                   help=f"with --lm: bonus per word, against the LM's preference for fewer words (default {LM_BETA})")
    p.add_argument("--lm_backend", "--lm-backend", choices=BACKENDS, default="python",
                   help="with --lm: read and query it with our ARPA reader (python, default) or KenLM's C++ engine "
                        "(kenlm: pip install 'whisper-scratch[kenlm]'; far less memory for large models, and KenLM "
                        "binary files)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--scoring", choices=SCORINGS, default="standard",
                   help="evaluate: standard (openai-whisper's normaliser and plain jiwer, as published WERs "
                        "are scored; default) or lenient (our normaliser, compounds joined; lower figures that "
                        "are not comparable with published ones)")
    p.add_argument("--noise_dir", "--noise-dir",
                   help="evaluate: also score each clip mixed with noise from this folder (any audio files), at "
                        "every --snr; a clip always gets the same noise segment (seeded by its path)")
    p.add_argument("--snr", default=None,
                   help="evaluate with --noise_dir: signal-to-noise ratios in dB, comma-separated (default 20,10,5,0)")
    p.add_argument("--noise_seed", "--noise-seed", type=int, default=0,
                   help="evaluate with --noise_dir: seed of the per-clip choice of noise segment (default 0)")
    args = p.parse_args(argv)
    if args.word_timestamps:
        args.timestamps = True
    if args.fast:
        args.trim_padding = args.silence_padding = True
        args.dtype = fast_dtype(args.dtype, args.device, args.quantize)
    return args


def _bool(text: str) -> bool:
    """True/False, yes/no, 1/0 (any case), as openai-whisper's command line takes them."""
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
    return value


def _clip_timestamps(text: str) -> tuple[float, ...]:
    try:
        points = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds separated by commas (e.g. 0,30,60), got {text!r}") from None
    if any(b < a for a, b in zip(points, points[1:])) or any(t < 0 for t in points):
        raise argparse.ArgumentTypeError(f"times must be non-negative and in order, got {text!r}")
    return points


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see EPILOG) instead of exiting."""
    try:
        args = parse_args(argv)
    except SystemExit as e:  # argparse has printed usage and its error (or --help)
        return e.code if isinstance(e.code, int) else USAGE
    try:
        return _run(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED


@dataclass
class _Inputs:
    """What a run reads: the audio files, and for evaluate the listing's rows (audio + reference)."""

    paths: list[Path]
    rows: list[Utterance]
    mixer: NoiseMixer | None = None  # evaluate under noise
    lm: Any = None  # --lm (lm.fusion.read_lm), read before the model loads


def _run(args: argparse.Namespace) -> int:
    _check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    inputs = _inputs(args)
    inputs.lm = _read_lm(args)
    load = load_audio
    if args.mode == "single":  # the one file is decoded first: bad audio costs no model loading
        try:
            audio = load_audio(inputs.paths[0])
        except AudioError as e:
            print(f"error: {printable(str(e))}", file=sys.stderr)
            return UNREADABLE
        load = lambda _path: audio  # noqa: E731 -- read once, not twice
    loaded = _load(args)
    try:
        language = loaded.language_code(args.language)
        loaded.check_task(args.task)
    except ModelError as e:
        raise CliError(str(e)) from None
    if language is None and loaded.is_multilingual and inputs.rows:
        language = listed_language(inputs.rows, loaded.tokenizer.all_language_codes)
        if language:
            print(f"decoding in '{language}', the language the listing gives for every row (--language overrides)",
                  file=sys.stderr)
    scorer = _lm_scorer(args, inputs, language, loaded)
    if scorer is not None and args.lm_alpha is None and args.lm_beta is None and (stored := read_stored(args.model_path, args.lm)):
        args.lm_alpha, args.lm_beta = stored["lm_alpha"], stored["lm_beta"]
        print(f"--lm_alpha {args.lm_alpha:g} --lm_beta {args.lm_beta:g}: tuned for this model on "
              f"{stored.get('dev', 'a dev split')} ({STORED} in {args.model_path})", file=sys.stderr)
    opts = _options(args, language, scorer)
    transcribe = transcribe_files_batched if args.batched else transcribe_files
    interrupted = False
    try:
        results, failed = transcribe(loaded.model, inputs.paths, opts, loaded.tokenizer, load=load)
    except Interrupted as e:  # keep what was done
        results, failed, interrupted = e.results, e.failed, True

    for _, error in failed:
        print(f"{'error' if args.mode == 'single' else 'skipped'}: {printable(error)}", file=sys.stderr)
    if interrupted and args.mode == "evaluate":
        print("interrupted: nothing scored", file=sys.stderr)
        return INTERRUPTED
    if args.mode == "evaluate":
        noisy = (transcribe_noisy(loaded.model, inputs.paths, opts, loaded.tokenizer, inputs.mixer, args.snr)
                 if inputs.mixer else [])
        return _evaluate(args, [NoisyRun(None, results, failed), *noisy], inputs, language)
    if scorer is not None and results:
        _warn_overlap(args, scorer, [r["text"] for r in results], "transcripts", language)
    if results:
        _output(args, results)
    if interrupted:
        print(f"interrupted after {len(results)} of {len(inputs.paths)} audio files (the last possibly in part)",
              file=sys.stderr)
        return INTERRUPTED
    if failed:
        if args.mode != "single":
            print(f"{len(failed)} of {len(inputs.paths)} audio files could not be read or finished (listed above "
                  f"as skipped); the other {len(inputs.paths) - len(failed)} were transcribed", file=sys.stderr)
        return UNREADABLE
    return OK


def _options(args: argparse.Namespace, language: str | None, lm: WordScorer | None = None) -> TranscribeOptions:
    timestamps = args.timestamps or needs_timestamps([f".{fmt}" for fmt in _output_formats(args)]
                                                     + [_suffix(args.output_file)])
    fusion = {} if lm is None else dict(lm=lm, lm_alpha=_given(args.lm_alpha, LM_ALPHA),
                                        lm_beta=_given(args.lm_beta, LM_BETA))
    return TranscribeOptions(
        decoding=DecodingOptions(task=args.task, language=language, beam_size=args.beam_size,
                                 best_of=args.best_of, seed=args.seed,
                                 without_timestamps=not timestamps, prompt=args.initial_prompt,
                                 compile=args.compile, **fusion),
        fallback=FallbackOptions(temperatures=(0.0,)) if args.no_fallback else FallbackOptions(),
        batch_size=args.batch_size if args.mode != "single" or args.batched else 1,
        condition_on_previous_text=args.condition_on_previous_text,
        trim_padding=args.trim_padding, silence_padding=args.silence_padding,
        word_timestamps=args.word_timestamps, prepend_punctuations=args.prepend_punctuations,
        append_punctuations=args.append_punctuations, clip_timestamps=args.clip_timestamps,
        hallucination_silence_threshold=args.hallucination_silence_threshold)


def _given(value: float | None, default: float) -> float:
    return default if value is None else value


def _read_lm(args: argparse.Namespace) -> Any:
    """The --lm model, read before the model loads so that a bad file costs no waiting."""
    if not args.lm:
        return None
    try:
        return read_lm(args.lm, args.lm_backend)
    except ArpaError as e:
        raise CliError(f"--lm: {e}") from None


def _lm_scorer(args: argparse.Namespace, inputs: _Inputs, language: str | None,
               loaded: LoadedModel) -> CachedScorer | None:
    """The scorer beam search fuses in: the LM's words normalised as scoring normalises the
    decoding language, which must therefore be known."""
    if inputs.lm is None:
        return None
    if language is None and loaded.is_multilingual:
        raise CliError(f"--lm {args.lm}: give --language, the language of the LM's text (its words are "
                       "normalised as WER scoring normalises that language)")
    scorer = scorer_for(inputs.lm, language)
    if inputs.rows:
        _warn_overlap(args, scorer, [r.text for r in inputs.rows], "references", language)
    return scorer


def _warn_overlap(args: argparse.Namespace, scorer: CachedScorer, texts: list[str], what: str,
                  language: str | None) -> None:
    """One warning line when the LM knows few of the words of `texts` (of another language?)."""
    share = vocabulary_overlap(scorer, texts)
    if share < LM_OVERLAP_WARNING:
        language = language or "en"
        print(f"warning: --lm {args.lm} knows only {share:.0%} of the words of the {what} ({language} "
              "normalisation): is it a model of this language? Build one with whisper-scratch lm build "
              f"--language {language}", file=sys.stderr)


def _output(args: argparse.Namespace, results: list[dict]) -> None:
    """Write the transcripts where asked, else print them; printed as well when writing fails."""
    if not (args.output_file or _output_formats(args)):
        _print(args, results)
        return
    try:
        if args.output_file:
            _write(args, results)
        else:
            _write_per_audio(args, results)
    except CliError as e:
        _print(args, results)
        raise CliError(f"{e}; the transcripts are printed to stdout instead") from None


def _print(args: argparse.Namespace, results: list[dict]) -> None:
    for r in results:
        print(r["text"] if args.mode == "single" else f"{printable(r['audio'])}\t{r['text']}")


def _check_args(args: argparse.Namespace) -> None:
    """Everything that can be checked before loading anything, so mistakes cost no waiting."""
    if args.batch_size < 1:
        raise CliError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.beam_size is not None and args.beam_size < 1:
        raise CliError(f"--beam_size must be at least 1, got {args.beam_size} (leave it out for greedy decoding)")
    if args.best_of < 1:
        raise CliError(f"--best_of must be at least 1, got {args.best_of}")
    if args.lm:
        if not args.beam_size:
            raise CliError(f"--lm {args.lm} is fused into beam search: add --beam_size 5 (greedy decoding "
                           "cannot use it)")
        if not Path(args.lm).is_file():
            raise CliError(f"--lm {args.lm}: language model not found; build one with whisper-scratch lm build "
                           "--text TEXT --language LANG --out LM.arpa")
    else:
        for flag, value in (("--lm_alpha", args.lm_alpha), ("--lm_beta", args.lm_beta),
                            ("--lm_backend", None if args.lm_backend == "python" else args.lm_backend)):
            if value is not None:
                raise CliError(f"{flag} is for a language model: give it with --lm LM.arpa")
    word_options = {"--max_line_width": args.max_line_width, "--max_line_count": args.max_line_count,
                    "--highlight_words": args.highlight_words,
                    "--hallucination_silence_threshold": args.hallucination_silence_threshold}
    for flag, value in word_options.items():
        if value and not args.word_timestamps:
            raise CliError(f"{flag} needs --word_timestamps (it works on word timings)")
    for flag in ("--max_line_width", "--max_line_count"):
        if (word_options[flag] or 1) < 1:
            raise CliError(f"{flag} must be at least 1, got {word_options[flag]}")
    if args.max_line_count and not args.max_line_width:
        raise CliError("--max_line_count needs --max_line_width (lines are cut by width)")
    if args.threads is not None and args.threads < 1:
        raise CliError(f"--threads must be at least 1, got {args.threads}")
    if args.quantize and str(args.device).startswith("cuda"):
        raise CliError(f"--quantize {args.quantize} runs on the CPU only; on --device {args.device} leave it out "
                       "(fp16, the GPU default, is the fast precision there)")
    if args.quantize and args.dtype not in (None, "fp32"):
        raise CliError(f"--quantize {args.quantize} takes fp32 activations: drop --dtype {args.dtype}")
    if str(args.device).startswith("cuda") and (problem := cuda_problem()):
        raise CliError(f"--device {args.device}: {problem} (or use --device cpu)")
    if args.output_dir or args.output_format:
        if args.output_file:
            raise CliError("give --output_file, or --output_dir / --output_format (one file per audio), not both")
        if args.mode == "evaluate":
            raise CliError("evaluate writes one JSON report: use --output_file report.json, not --output_dir")
        if args.output_dir and Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
            raise CliError(f"--output_dir {args.output_dir} is a file; give a folder")
        if problem := unwritable(args.output_dir or ".", folder=True):
            raise CliError(f"--output_dir {args.output_dir or '.'}: {problem}")
    if args.batched:
        try:
            silero_weights_path()
        except VadUnavailable as e:
            raise CliError(f"--batched: {e}") from None
    if args.output_file:
        suffix = _suffix(args.output_file)
        if args.mode == "evaluate" and suffix != ".json":
            raise CliError(f"--output_file {args.output_file}: evaluate writes a JSON report, "
                           "give a file ending in .json")
        if suffix not in SUPPORTED_EXTENSIONS:
            raise CliError(f"--output_file {args.output_file}: unknown format {suffix or '(no extension)'}; "
                           f"use one of {', '.join(SUPPORTED_EXTENSIONS)}")
        if Path(args.output_file).is_dir():
            raise CliError(f"--output_file {args.output_file} is a folder; give a file name such as "
                           f"{Path(args.output_file) / ('out' + suffix if suffix else 'out.json')}")
        if problem := unwritable(args.output_file):
            raise CliError(f"--output_file {args.output_file}: {problem}")
    if args.mode != "evaluate" and (args.reference_file or args.dataset):
        raise CliError(f"--{'reference_file' if args.reference_file else 'dataset'} is for --mode evaluate, "
                       f"not {args.mode}")
    if args.mode == "single":
        if args.audio_dir or args.manifest:
            raise CliError("single mode takes one --audio_path; use --mode directory or batch for "
                           "--audio_dir / --manifest")
        if len(args.audio_path) != 1:
            raise CliError(f"single mode needs exactly one --audio_path, got {len(args.audio_path)} "
                           "(use --mode batch for several files)")
    elif args.mode == "evaluate":
        if args.audio_path or args.audio_dir:
            raise CliError("evaluate reads its audio from --manifest (or --reference_file, or --dataset); "
                           "drop --audio_path / --audio_dir")
        given = [flag for flag in ("manifest", "reference_file", "dataset") if getattr(args, flag)]
        if len(given) > 1:
            raise CliError(f"evaluate takes one of --manifest, --reference_file and --dataset, "
                           f"got --{' and --'.join(given)}")
        if not given:
            raise CliError("evaluate needs --manifest (or --reference_file): a .jsonl/.csv/.tsv listing "
                           "audio and text; or --dataset, a Hugging Face dataset")
    if args.snr is not None and not args.noise_dir:
        raise CliError("--snr needs --noise_dir, the folder of noise recordings to mix in")
    if args.noise_dir and args.mode != "evaluate":
        raise CliError(f"--noise_dir is for --mode evaluate (noisy references), not {args.mode}")
    try:
        args.snr = parse_snrs(args.snr) if args.snr is not None else (20.0, 10.0, 5.0, 0.0)
    except ValueError as e:
        raise CliError(f"--snr {args.snr}: {e}") from None


def _suffix(path: str | None) -> str:
    return Path(path).suffix.lower() if path else ""


def _inputs(args: argparse.Namespace) -> _Inputs:
    """The audio of the mode, the listing's rows for evaluate, and the noise of --noise_dir: all
    read before the model loads, so that a bad one costs no waiting."""
    try:
        if args.mode == "evaluate":
            rows = (read_dataset(args.dataset, args.split, config=args.dataset_config, audio_column=args.audio_column,
                                 text_column=args.text_column) if args.dataset else read_manifest(_listing(args)))
            if not rows:
                raise CliError(f"{_listing(args)} lists no utterances")
            if empty := [printable(str(r.audio)) for r in rows if not r.text.strip()]:
                print(f"warning: {_listing(args)}: {len(empty)} row{'s' * (len(empty) > 1)} with an empty reference "
                      f"text, so each word of {'their' if len(empty) > 1 else 'its'} hypothesis counts as an insertion: "
                      f"{name_list(empty, 5)}", file=sys.stderr)
            return _Inputs([r.audio for r in rows], rows, _noise_mixer(args))
        if args.mode == "single":
            return _Inputs([Path(args.audio_path[0])], [])
        return _Inputs(collect_audio(args.audio_path, args.audio_dir, args.manifest), [])
    except ManifestError as e:
        raise CliError(str(e)) from None


def _load(args: argparse.Namespace) -> LoadedModel:
    try:
        return LoadedModel.load(args.model_path, device=args.device, dtype=args.dtype, quantize=args.quantize)
    except FileNotFoundError:
        raise CliError(f"model not found: {args.model_path}; pass a local checkpoint with --model_path: a .pt "
                       "file, or a folder with model.pt (ours), config.json + model.bin (CTranslate2) or "
                       "config.json + model.safetensors (Hugging Face); or a size name such as tiny or base "
                       "to download") from None
    except ModelError as e:
        raise CliError(str(e)) from None


def _write(args: argparse.Namespace, results: list[dict]) -> None:
    lines = LineOptions(args.max_line_width, args.max_line_count, args.highlight_words)
    try:
        if _suffix(args.output_file) in SUBTITLE_EXTENSIONS and args.mode != "single":
            output = Path(args.output_file)
            targets = per_audio_targets(results, output.parent, output.suffix)
            for r, target in targets:
                write_results([r], target, lines)
            print(f"wrote {len(targets)} subtitle files ({_suffix(args.output_file)}, one per audio) "
                  f"to {output.parent}", file=sys.stderr)
        else:
            write_results(results, args.output_file, lines)
            print(f"wrote {len(results)} transcript{'s' * (len(results) != 1)} to {args.output_file}",
                  file=sys.stderr)
    except OSError as e:
        raise CliError(f"cannot write {args.output_file}: {_why(e)}") from None


def _why(error: OSError) -> str:
    """The reason alone: the file named in an OSError may be the temporary one beside the target."""
    return error.strerror or one_line(error)


def _output_formats(args: argparse.Namespace) -> list[str]:
    """The formats --output_dir / --output_format ask for (none without them)."""
    if not (args.output_dir or args.output_format):
        return []
    return list(OUTPUT_FORMATS) if args.output_format in (None, "all") else [args.output_format]


def _write_per_audio(args: argparse.Namespace, results: list[dict]) -> None:
    """openai-whisper's habit: OUTPUT_DIR/<audio name>.<format> for every audio and format."""
    folder = Path(args.output_dir or ".")
    formats = _output_formats(args)
    lines = LineOptions(args.max_line_width, args.max_line_count, args.highlight_words)
    try:
        for fmt in formats:
            for r, target in per_audio_targets(results, folder, f".{fmt}"):
                write_results([r], target, lines)
    except OSError as e:
        raise CliError(f"cannot write into {folder}: {_why(e)}") from None
    print(f"wrote {', '.join(formats)} for {len(results)} audio file{'s' * (len(results) != 1)} to {folder}",
          file=sys.stderr)


def _noise_mixer(args: argparse.Namespace) -> NoiseMixer | None:
    if not args.noise_dir:
        return None
    try:
        return NoiseMixer(args.noise_dir, args.noise_seed)
    except ValueError as e:
        raise CliError(f"--noise_dir: {e}") from None


def _evaluate(args: argparse.Namespace, runs: list[NoisyRun], inputs: _Inputs, language: str | None) -> int:
    """Score the clean run (and the noisy ones after it), print, and write the JSON report."""
    rows, mixer, failed = inputs.rows, inputs.mixer, runs[0].failed
    try:
        scores = score_runs(runs, rows, language, args.scoring)
    except ValueError as e:
        raise CliError(f"cannot score {_listing(args)}: {e}") from None
    unwritten = None
    if args.output_file:
        try:
            write_report(args.output_file, scores, mixer)
            print(f"wrote the evaluation of {len(rows)} utterances to {args.output_file}", file=sys.stderr)
        except OSError as e:
            unwritten = f"cannot write {args.output_file}: {_why(e)}; the hypotheses are printed to stdout instead"
            for u in scores[0].utterances:
                print(f"{printable(u['audio'])}\t{u['hypothesis']}")
    if mixer:
        print(f"noise from {mixer.noise_dir} (seed {mixer.seed}):\n{format_table(scores)}")
    print(f"{'clean: ' if mixer else ''}WER {scores[0].wer * 100:.2f}%  CER {scores[0].cer * 100:.2f}%  "
          f"on {len(rows)} utterances ({len(failed)} unreadable), {args.scoring} scoring")
    if failed:
        print(f"{len(failed)} of {len(rows)} clips could not be read (listed above as skipped) and were "
              "scored as empty hypotheses", file=sys.stderr)
    if unwritten:
        raise CliError(unwritten)
    return UNREADABLE if failed else OK


def _listing(args: argparse.Namespace) -> str:
    """What evaluate reads, for messages."""
    return f"{args.dataset} [{args.split}]" if args.dataset else args.manifest or args.reference_file


if __name__ == "__main__":
    sys.exit(main())
