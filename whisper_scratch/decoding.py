"""Decoding over the static KV cache: language detection, batched greedy/sampling and beam search,
with Whisper's suppression and timestamp rules.

Shapes: B audios, K beams per audio, T tokens so far, V vocabulary.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from tokenizer import WhisperTokenizer, get_tokenizer

from .model import Whisper

TIME_PRECISION = 0.02  # seconds per timestamp token: 30 s / 1500 encoder frames


@dataclass(frozen=True)
class DecodingOptions:
    task: str = "transcribe"
    language: str | None = None  # None: detect per audio (multilingual models)
    temperature: float = 0.0  # 0: greedy (or beam search when beam_size is set)
    best_of: int | None = None  # samples per audio when temperature > 0; the most likely is kept
    seed: int = 0  # of the sampler, so that a run can be repeated exactly
    sample_len: int | None = None  # max new tokens; default half the text context
    beam_size: int | None = None
    patience: float = 1.0
    length_penalty: float = 1.0  # beams ranked by log-probability / length ** length_penalty
    prompt: str | list[int] | None = None  # previous text, fed after <|startofprev|>
    suppress_tokens: str | tuple[int, ...] | None = "-1"  # "-1": Whisper's non-speech symbols
    suppress_blank: bool = True
    without_timestamps: bool = False
    max_initial_timestamp: float | None = 1.0


@dataclass
class DecodingResult:
    language: str
    tokens: list[int]
    text: str
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float
    language_probs: dict[str, float] | None = field(default=None, repr=False)


def compression_ratio(text: str) -> float:
    """Bytes over zlib-compressed bytes: high for repetitive (looping) output."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def tokenizer_for(model: Whisper, options: DecodingOptions | None = None) -> WhisperTokenizer:
    """Whisper BPE tokenizer matching the model's vocabulary (a SentencePiece one is passed in explicitly)."""
    language = options.language if options else None
    task = options.task if options else "transcribe"
    if not model.is_multilingual:
        return get_tokenizer(False)
    return get_tokenizer(True, num_languages=model.num_languages, language=language or "en", task=task)


@torch.no_grad()
def detect_language(model: Whisper, audio_features: Tensor, tokenizer: WhisperTokenizer) -> tuple[list[str], list[dict[str, float]]]:
    """Most likely language code per audio, from the logits after <|startoftranscript|>.

    audio_features: (B, 1500, D). Returns codes and per-audio probability dicts."""
    if not tokenizer.is_multilingual:
        return ["en"] * audio_features.shape[0], [{"en": 1.0}] * audio_features.shape[0]
    sot = torch.full((audio_features.shape[0], 1), tokenizer.sot, device=audio_features.device)
    logits = model.logits(sot, audio_features)[:, 0]
    lang_ids = torch.tensor(tokenizer.all_language_tokens, device=logits.device)
    probs = logits[:, lang_ids].softmax(dim=-1).cpu()
    codes = tokenizer.all_language_codes
    best = [codes[i] for i in probs.argmax(dim=-1).tolist()]
    return best, [dict(zip(codes, row.tolist())) for row in probs]


def suppressed_tokens(tk: WhisperTokenizer, spec: str | tuple[int, ...] | None, n_vocab: int) -> list[int]:
    """Sorted ids never sampled: `spec` ("-1" or -1 in it: Whisper's non-speech symbols) plus the
    control tokens, which never belong in a transcript."""
    if isinstance(spec, str):
        spec = tuple(int(t) for t in spec.split(",") if t.strip())
    ids = set(spec or ())
    if -1 in ids:
        ids = (ids - {-1}) | set(tk.non_speech_tokens)
    ids |= {tk.transcribe, tk.translate, tk.sot, tk.sot_prev, tk.sot_lm, tk.no_speech}
    return sorted(i for i in ids if 0 <= i < n_vocab)


def blank_tokens(tk: WhisperTokenizer) -> list[int]:
    """Tokens suppressed as the first sampled token: a blank and <|endoftext|>."""
    return tk.encode(" ") + [tk.eot]


class LogitRules:
    """Whisper's masks on next-token logits (B, V), applied in place in the reference order:
    blank suppression at the first step, the suppressed-token list, then the timestamp rules."""

    def __init__(self, tokenizer: WhisperTokenizer, options: DecodingOptions, sample_begin: int, n_vocab: int):
        self.tk = tokenizer
        self.sample_begin = sample_begin
        self.suppress_blank = options.suppress_blank
        self.blank = blank_tokens(tokenizer)
        self.suppress = suppressed_tokens(tokenizer, options.suppress_tokens, n_vocab)
        self.timestamps = not options.without_timestamps
        self.max_initial = (None if options.max_initial_timestamp is None
                            else round(options.max_initial_timestamp / TIME_PRECISION))

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        """logits (N, V) for the next token after tokens (N, T); modified in place."""
        if self.suppress_blank and tokens.shape[1] == self.sample_begin:
            logits[:, self.blank] = -torch.inf
        if self.suppress:
            logits[:, self.suppress] = -torch.inf
        if self.timestamps:
            self._timestamp_rules(logits, tokens)

    def _timestamp_rules(self, logits: Tensor, tokens: Tensor) -> None:
        ts, eot = self.tk.timestamp_begin, self.tk.eot
        logits[:, self.tk.no_timestamps] = -torch.inf
        sampled = tokens[:, self.sample_begin:]
        for k in range(tokens.shape[0]):
            seq = sampled[k].tolist()
            last_ts = len(seq) >= 1 and seq[-1] >= ts
            penult_ts = len(seq) < 2 or seq[-2] >= ts
            if last_ts:
                # Timestamps come in pairs (end, start); after a closed pair text or EOT must follow.
                if penult_ts:
                    logits[k, ts:] = -torch.inf
                else:
                    logits[k, :eot] = -torch.inf
            stamps = [t for t in seq if t >= ts]
            if stamps:
                # Time never goes backwards, and a segment is never empty.
                floor = stamps[-1] if last_ts and not penult_ts else stamps[-1] + 1
                logits[k, ts:floor] = -torch.inf
        if tokens.shape[1] == self.sample_begin:
            logits[:, :ts] = -torch.inf  # the first sampled token is a timestamp
            if self.max_initial is not None:
                logits[:, ts + self.max_initial + 1:] = -torch.inf
        logprobs = F.log_softmax(logits.float(), dim=-1)
        ts_mass = logprobs[:, ts:].logsumexp(dim=-1)
        best_text = logprobs[:, :ts].max(dim=-1).values
        logits[ts_mass > best_text, :ts] = -torch.inf  # a likely timestamp beats any single text token


def _initial_tokens(tk: WhisperTokenizer, language: str, options: DecodingOptions, n_ctx: int) -> list[int]:
    """[<|startofprev|> prompt…] <|startoftranscript|> [<|lang|> <|task|>] [<|notimestamps|>]"""
    tokens = [tk.sot]
    if tk.is_multilingual:
        tokens += [tk.to_language_token(language), tk.translate if options.task == "translate" else tk.transcribe]
    if options.without_timestamps:
        tokens.append(tk.no_timestamps)
    if options.prompt:
        prompt = tk.encode(" " + options.prompt.strip()) if isinstance(options.prompt, str) else list(options.prompt)
        tokens = [tk.sot_prev, *prompt[-(n_ctx // 2 - 1):]] + tokens
    return tokens


@torch.no_grad()
def decode(model: Whisper, mel: Tensor, options: DecodingOptions = DecodingOptions(),
           tokenizer: WhisperTokenizer | None = None) -> list[DecodingResult]:
    """Decode a batch of 30-second windows.

    mel: (B, n_mels, 3000) log-mel, or (B, 1500, D) audio features already encoded.
    Returns one DecodingResult per audio."""
    if mel.ndim == 2:
        mel = mel[None]
    if mel.shape[-2:] == (model.dims.n_audio_ctx, model.dims.n_audio_state):
        features = mel.to(model.dtype)
    else:
        features = model.embed_audio(mel.to(model.device, model.dtype))
    return decode_features(model, features, options, tokenizer)


@torch.no_grad()
def decode_features(model: Whisper, features: Tensor, options: DecodingOptions = DecodingOptions(),
                    tokenizer: WhisperTokenizer | None = None) -> list[DecodingResult]:
    """Decode encoded audio: features (B, T, D), T = 1500 for 30-second windows or fewer for a
    trimmed encoder input (see `TranscribeOptions.trim_padding`). One DecodingResult per audio."""
    tokenizer = tokenizer or tokenizer_for(model, options)

    languages, lang_probs = [options.language or "en"] * features.shape[0], None
    if options.language is None and tokenizer.is_multilingual:
        languages, lang_probs = detect_language(model, features, tokenizer)

    n_ctx = model.dims.n_text_ctx
    rows = [_initial_tokens(tokenizer, lang, options, n_ctx) for lang in languages]
    prompt = torch.tensor(rows, device=features.device)
    if prompt.shape[1] >= n_ctx:
        raise ValueError(f"the initial tokens ({prompt.shape[1]}) fill the text context {n_ctx}: nothing left to sample")
    # As the reference: sampling stops once the sequence would outgrow the context, so a long
    # prompt shortens the window's output rather than failing (the last token is never fed back).
    sample_len = min(options.sample_len or n_ctx // 2, n_ctx - prompt.shape[1] + 1)
    rules = LogitRules(tokenizer, options, prompt.shape[1], model.dims.n_vocab)
    sot_index = rows[0].index(tokenizer.sot)

    search = _beam_search if options.beam_size and options.temperature == 0 else _sample
    seqs, sum_logprobs, no_speech = search(model, features, prompt, rules, options, sample_len, sot_index)

    results = []
    for i, (seq, lp) in enumerate(zip(seqs, sum_logprobs)):
        text = tokenizer.decode([t for t in seq if t < tokenizer.eot]).strip() if not rules.timestamps \
            else tokenizer.decode(seq).strip()
        results.append(DecodingResult(
            language=languages[i], tokens=seq, text=text, avg_logprob=lp / (len(seq) + 1),
            no_speech_prob=no_speech[i], temperature=options.temperature,
            compression_ratio=compression_ratio(text), language_probs=lang_probs[i] if lang_probs else None))
    return results


def _first_step(model: Whisper, features: Tensor, prompt: Tensor, max_len: int, tokenizer: WhisperTokenizer,
                sot_index: int):
    cache = model.decoder.new_cache(prompt.shape[0], max_len, features.dtype, features.device)
    logits = model.logits(prompt, features, cache)
    no_speech = [0.0] * prompt.shape[0]
    if tokenizer.no_speech is not None:
        no_speech = logits[:, sot_index].softmax(dim=-1)[:, tokenizer.no_speech].tolist()
    return cache, logits[:, -1], no_speech


def _sample(model: Whisper, features: Tensor, prompt: Tensor, rules: LogitRules, options: DecodingOptions,
            sample_len: int, sot_index: int):
    """Greedy (temperature 0) or sampling, all B rows at once; finished rows keep emitting EOT.

    With best_of = N at temperature > 0, each audio is sampled N times (B * N rows) and the sample
    with the best log-probability / length ** length_penalty is kept, as the beams are ranked."""
    n_best = (options.best_of or 1) if options.temperature > 0 else 1
    if n_best > 1:
        features, prompt = features.repeat_interleave(n_best, dim=0), prompt.repeat_interleave(n_best, dim=0)
    generator = torch.Generator(device=features.device).manual_seed(options.seed)
    eot = rules.tk.eot
    cache, logits, no_speech = _first_step(model, features, prompt, prompt.shape[1] + sample_len - 1, rules.tk,
                                          sot_index)
    tokens = prompt
    sum_lp = torch.zeros(prompt.shape[0], device=prompt.device)
    done = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    for step in range(sample_len):
        rules.apply(logits, tokens)
        logprobs = F.log_softmax(logits.float(), dim=-1)
        if options.temperature == 0:
            nxt = logits.argmax(dim=-1)
        else:
            probs = F.softmax(logits.float() / options.temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
        sum_lp += logprobs.gather(1, nxt[:, None])[:, 0] * ~done
        nxt = torch.where(done, torch.full_like(nxt, eot), nxt)
        done |= nxt == eot
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        if done.all() or step == sample_len - 1:
            break
        logits = model.logits(nxt[:, None], features, cache)[:, -1]
    seqs = []
    for row in tokens[:, prompt.shape[1]:].tolist():
        seqs.append(row[:row.index(eot)] if eot in row else row)
    sum_lps = sum_lp.tolist()
    if n_best > 1:
        candidates = [list(zip(seqs[i:i + n_best], sum_lps[i:i + n_best])) for i in range(0, len(seqs), n_best)]
        best = [_most_likely(c, options.length_penalty) for c in candidates]
        seqs, sum_lps, no_speech = [b[0] for b in best], [b[1] for b in best], no_speech[::n_best]
    return seqs, sum_lps, no_speech


def _most_likely(hypotheses: list[tuple[list[int], float]], length_penalty: float) -> tuple[list[int], float]:
    """The (tokens, sum log-probability) with the best log-probability / length ** length_penalty."""
    return max(hypotheses, key=lambda h: h[1] / max(len(h[0]), 1) ** length_penalty)


def _beam_search(model: Whisper, features: Tensor, prompt: Tensor, rules: LogitRules, options: DecodingOptions,
                 sample_len: int, sot_index: int):
    """Beam search with K = beam_size live beams per audio.

    Each step ranks the 2K best (beam, token) extensions by cumulative log-probability. A hypothesis
    that ends among the first K is finished, and the next unfinished extension takes its place, so
    K beams stay alive. An audio is done once it has round(K * patience) finished hypotheses; the
    best by log-probability / length ** length_penalty wins (CTranslate2's rules, so results match
    faster-whisper)."""
    k_beams, eot = options.beam_size, rules.tk.eot
    n_audio, begin = prompt.shape[0], prompt.shape[1]
    max_done = round(k_beams * options.patience)
    features = features.repeat_interleave(k_beams, dim=0)
    tokens = prompt.repeat_interleave(k_beams, dim=0)
    cache, logits, no_speech = _first_step(model, features, tokens, begin + sample_len - 1, rules.tk, sot_index)
    no_speech = no_speech[::k_beams]
    # All beams start equal: only the first is live at step 0, so the K extensions differ.
    scores = torch.full((n_audio, k_beams), -torch.inf, device=tokens.device)
    scores[:, 0] = 0
    finished: list[list[tuple[list[int], float]]] = [[] for _ in range(n_audio)]
    done = [False] * n_audio
    for step in range(sample_len):
        last = step == sample_len - 1
        rules.apply(logits, tokens)
        logprobs = F.log_softmax(logits.float(), dim=-1)
        n_vocab = logprobs.shape[-1]
        total = (logprobs.view(n_audio, k_beams, n_vocab) + scores[:, :, None]).view(n_audio, -1)
        top_scores, top_ids = total.topk(2 * k_beams, dim=-1)
        sources, words = (top_ids // n_vocab).tolist(), (top_ids % n_vocab).tolist()
        top_scores = top_scores.tolist()
        rows, next_words, next_scores = [], [], []
        for a in range(n_audio):
            spare = k_beams  # next candidate to fill a slot whose hypothesis finished
            for k in range(k_beams):
                pick = k
                if not done[a] and (words[a][k] == eot or last):
                    seq = tokens[a * k_beams + sources[a][k], begin:].tolist()
                    finished[a].append((seq if words[a][k] == eot else seq + [words[a][k]], top_scores[a][k]))
                    while spare < 2 * k_beams and words[a][spare] == eot:
                        spare += 1
                    if spare < 2 * k_beams:
                        pick, spare = spare, spare + 1
                rows.append(a * k_beams + sources[a][pick])
                next_words.append(words[a][pick])
                next_scores.append(top_scores[a][pick])
            done[a] = done[a] or last or len(finished[a]) >= max_done
        if all(done):
            break
        index = torch.tensor(rows, device=tokens.device)
        cache.reorder(index)
        new = torch.tensor(next_words, device=tokens.device)
        tokens = torch.cat([tokens.index_select(0, index), new[:, None]], dim=1)
        scores = torch.tensor(next_scores, device=tokens.device).view(n_audio, k_beams)
        logits = model.logits(new[:, None], features, cache)[:, -1]

    best = [_most_likely(f, options.length_penalty) for f in finished]
    return [b[0] for b in best], [b[1] for b in best], no_speech
