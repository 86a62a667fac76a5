"""Decoding over the static KV cache: language detection, batched greedy/sampling and beam search
with Whisper's suppression and timestamp rules (`DecodingTask`, one decode of a batch), and the
temperature fallback that decodes a window again when its text loops or is unlikely
(`decode_with_fallback`), and the shallow fusion of a word language model (`WordScorer`) into
beam search.

Shapes: B audios, K beams per audio, T tokens so far, V vocabulary.
"""
from __future__ import annotations

import zlib
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ..audio.geometry import TIME_PRECISION
from ..model.loaded import whisper_vocabulary
from ..model.whisper import KVCache, Whisper
from ..tokenizer import TokenizerBase
from ..tokenizer.suppression import blank_tokens, suppressed_tokens


class WordScorer(Protocol):
    """A language model over words, as beam search fuses it (`DecodingOptions.lm`). A state is what
    the model keeps of the words so far: hashable, compared by value. Log-probabilities are
    natural logarithms, the unit of the decoder's own."""

    def start(self, context: str) -> Hashable:
        """The state after the words of `context` (a prompt's text; "" for a sentence's start)."""

    def score(self, state: Hashable, text: str) -> tuple[float, int, Hashable]:
        """(ln p of the words of `text` after `state`, how many words, the state after them);
        `text` is decoded text as it is, which the scorer normalises into its words."""

    def end(self, state: Hashable) -> float:
        """ln p that the text ends after `state` (</s>)."""


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
    # Shallow fusion into beam search (temperature 0 with beam_size; sampling ignores it): at each
    # word boundary a beam's score gains lm_alpha * ln p_LM(word | the words before) + lm_beta, and
    # lm_alpha * ln p_LM(</s> | ...) at the end of the text. The prompt's words are the LM's history.
    lm: WordScorer | None = None
    lm_alpha: float = 0.5
    lm_beta: float = 0.0
    # Each one-token step through torch.compile over a cache of the whole text context
    # (`TextDecoder.step`): compiled once per batch shape; the first windows wait for it. The
    # step's masked attention rounds differently from the default path, which may change tokens.
    compile: bool = False


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


@dataclass(frozen=True)
class FallbackOptions:
    """When a window is decoded again, hotter: the reference's quality checks, and its no-speech rule."""

    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4  # above it the text loops
    logprob_threshold: float | None = -1.0  # below it (average per token) the text is unlikely
    no_speech_threshold: float | None = 0.6  # above it (with an unlikely text) the window is silence

    def needs_fallback(self, r: DecodingResult) -> bool:
        """The output loops or is unlikely, and is not excused as silence (the reference's rules)."""
        too_repetitive = self.compression_ratio_threshold is not None and r.compression_ratio > self.compression_ratio_threshold
        too_unlikely = self.logprob_threshold is not None and r.avg_logprob < self.logprob_threshold
        silence = self.no_speech_threshold is not None and r.no_speech_prob > self.no_speech_threshold and too_unlikely
        return (too_repetitive or too_unlikely) and not silence

    def is_no_speech(self, r: DecodingResult) -> bool:
        """Whisper's no-speech rule, applied to the final decoding of a window: the <|nospeech|>
        probability is high and the text is not likely enough to overrule it."""
        if self.no_speech_threshold is None or r.no_speech_prob <= self.no_speech_threshold:
            return False
        return not (self.logprob_threshold is not None and r.avg_logprob > self.logprob_threshold)

    def best_attempt(self, attempts: list[DecodingResult]) -> DecodingResult:
        """When every temperature failed, faster-whisper's choice: the most likely attempt among
        those that do not loop. openai-whisper keeps the last, hottest sample, which on a one-word
        clip is often a sentence of invented words."""
        limit = self.compression_ratio_threshold
        not_looping = [r for r in attempts if limit is None or r.compression_ratio <= limit]
        return max(not_looping or attempts, key=lambda r: r.avg_logprob)


def compression_ratio(text: str) -> float:
    """Bytes over zlib-compressed bytes: high for repetitive (looping) output."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def prompt_tokens(tokenizer: TokenizerBase, prompt: str | list[int] | None) -> list[int]:
    """The tokens of a prompt: text is encoded with a leading space, as Whisper saw previous text."""
    if not prompt:
        return []
    return tokenizer.encode(" " + prompt.strip()) if isinstance(prompt, str) else list(prompt)


@torch.no_grad()
def detect_language(model: Whisper, audio_features: Tensor,
                    tokenizer: TokenizerBase) -> tuple[list[str], list[dict[str, float]]]:
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


class LogitRules:
    """Whisper's masks on next-token logits (B, V), applied in place in the reference order:
    blank suppression at the first step, the suppressed-token list, then the timestamp rules."""

    def __init__(self, tokenizer: TokenizerBase, options: DecodingOptions, sample_begin: int, n_vocab: int):
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


class DecodingTask:
    """One decode of a batch of windows with one set of options: it owns the tokenizer, the
    prompt, the initial tokens of each row, the logit rules, the sample length and the KV cache.

        results = DecodingTask(model, tokenizer, options).run(features)
    """

    def __init__(self, model: Whisper, tokenizer: TokenizerBase, options: DecodingOptions):
        self.model, self.tokenizer, self.options = model, tokenizer, options
        self.n_ctx = model.dims.n_text_ctx
        # The prompt's tail that fits half the context, after <|startofprev|>.
        prompt = prompt_tokens(tokenizer, options.prompt)
        self.prompt = [tokenizer.sot_prev, *prompt[-(self.n_ctx // 2 - 1):]] if prompt else []
        self.cache: KVCache | None = None

    def initial_tokens(self, language: str) -> list[int]:
        """[<|startofprev|> prompt…] <|startoftranscript|> [<|lang|> <|task|>] [<|notimestamps|>]"""
        tokens = [*self.prompt, *self.tokenizer.start_sequence(language, self.options.task)]
        if self.options.without_timestamps:
            tokens.append(self.tokenizer.no_timestamps)
        return tokens

    @torch.no_grad()
    def run(self, features: Tensor) -> list[DecodingResult]:
        """Decode encoded audio: features (B, T, D), T = 1500 for 30-second windows or fewer for a
        trimmed encoder input. One DecodingResult per audio."""
        tk, options = self.tokenizer, self.options
        languages, lang_probs = [options.language or "en"] * features.shape[0], None
        if options.language is None and tk.is_multilingual:
            languages, lang_probs = detect_language(self.model, features, tk)
        rows = [self.initial_tokens(lang) for lang in languages]
        initial = torch.tensor(rows, device=features.device)
        self.sample_begin = initial.shape[1]
        if self.sample_begin >= self.n_ctx:
            raise ValueError(f"the initial tokens ({self.sample_begin}) fill the text context {self.n_ctx}: "
                             "nothing left to sample")
        # As the reference: sampling stops once the sequence would outgrow the context, so a long
        # prompt shortens the window's output rather than failing (the last token is never fed back).
        self.sample_len = min(options.sample_len or self.n_ctx // 2, self.n_ctx - self.sample_begin + 1)
        self.rules = LogitRules(tk, options, self.sample_begin, self.model.dims.n_vocab)
        self.sot_index = len(self.prompt)

        beam = options.beam_size and options.temperature == 0
        seqs, sum_logprobs, no_speech = (self._beam_search if beam else self._sample)(features, initial)

        results = []
        for i, (seq, lp) in enumerate(zip(seqs, sum_logprobs)):
            text = tk.decode([t for t in seq if t < tk.eot]).strip() if not self.rules.timestamps \
                else tk.decode(seq).strip()
            results.append(DecodingResult(
                language=languages[i], tokens=seq, text=text, avg_logprob=lp / (len(seq) + 1),
                no_speech_prob=no_speech[i], temperature=options.temperature,
                compression_ratio=compression_ratio(text), language_probs=lang_probs[i] if lang_probs else None))
        return results

    def _first_step(self, features: Tensor, initial: Tensor) -> tuple[Tensor, list[float]]:
        """Feed the initial tokens (N, T0) of features (B, T, D) into a new cache, N / B rows per
        audio: the next-token logits (N, V) and each row's <|nospeech|> probability."""
        # A compiled step needs the same cache shape in every window, whatever its prompt.
        max_len = self.n_ctx if self.options.compile else initial.shape[1] + self.sample_len - 1
        self.cache = self.model.decoder.new_cache(initial.shape[0], max_len, features.dtype, features.device,
                                                  rows_per_audio=initial.shape[0] // features.shape[0])
        logits = self.model.logits(initial, features, self.cache)
        no_speech = [0.0] * initial.shape[0]
        if self.tokenizer.no_speech is not None:
            no_speech = logits[:, self.sot_index].softmax(dim=-1)[:, self.tokenizer.no_speech].tolist()
        return logits[:, -1], no_speech

    def _next(self, tokens: Tensor, features: Tensor) -> Tensor:
        """Logits (N, V) after one more token per row, tokens (N, 1), fed into the cache."""
        if self.options.compile:
            return self.model.decoder.step(tokens, self.cache, compiled=True)[:, -1]
        return self.model.logits(tokens, features, self.cache)[:, -1]

    def _sample(self, features: Tensor, initial: Tensor) -> tuple[list[list[int]], list[float], list[float]]:
        """Greedy (temperature 0) or sampling, all B rows at once; finished rows emit EOT.

        With best_of = N at temperature > 0, each audio is sampled N times (B * N rows) and the
        sample with the best log-probability / length ** length_penalty is kept, as the beams are
        ranked.

        Greedy decoding stops computing a row once it has finished: the rows still decoding
        (`alive`) are the batch of every later step, and the cache keeps only theirs. A batch's
        rows end far apart (docs/benchmarks.md measures how far), and each row's logits do not
        depend on the others'. Sampling keeps every row, so that a seed draws the same samples as
        before; a compiled step keeps its one batch shape."""
        options, eot, sample_len = self.options, self.tokenizer.eot, self.sample_len
        n_best = (options.best_of or 1) if options.temperature > 0 else 1
        if n_best > 1:
            initial = initial.repeat_interleave(n_best, dim=0)  # the samples of an audio share its features
        generator = torch.Generator(device=features.device).manual_seed(options.seed)
        logits, no_speech = self._first_step(features, initial)
        tokens = initial
        sum_lp = torch.zeros(initial.shape[0], device=initial.device)
        done = torch.zeros(initial.shape[0], dtype=torch.bool, device=initial.device)
        alive = torch.arange(initial.shape[0], device=initial.device)  # the rows of `logits`
        drop_finished = options.temperature == 0 and not options.compile
        for step in range(sample_len):
            self.rules.apply(logits, tokens.index_select(0, alive))
            logprobs = F.log_softmax(logits.float(), dim=-1)
            if options.temperature == 0:
                picked = logits.argmax(dim=-1)
            else:
                probs = F.softmax(logits.float() / options.temperature, dim=-1)
                picked = torch.multinomial(probs, 1, generator=generator)[:, 0]
            sum_lp[alive] += logprobs.gather(1, picked[:, None])[:, 0] * ~done[alive]
            nxt = torch.full_like(done, eot, dtype=picked.dtype).index_copy(0, alive, picked)
            nxt = torch.where(done, torch.full_like(nxt, eot), nxt)
            done |= nxt == eot
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            if done.all() or step == sample_len - 1:
                break
            if drop_finished and done[alive].any():
                # The features are read by the first step only; later steps read the cached keys.
                alive = alive.index_select(0, self.cache.drop(done[alive]))
            logits = self._next(nxt.index_select(0, alive)[:, None], features)
        seqs = []
        for row in tokens[:, initial.shape[1]:].tolist():
            seqs.append(row[:row.index(eot)] if eot in row else row)
        sum_lps = sum_lp.tolist()
        if n_best > 1:
            candidates = [list(zip(seqs[i:i + n_best], sum_lps[i:i + n_best])) for i in range(0, len(seqs), n_best)]
            best = [_most_likely(c, options.length_penalty) for c in candidates]
            seqs, sum_lps, no_speech = [b[0] for b in best], [b[1] for b in best], no_speech[::n_best]
        return seqs, sum_lps, no_speech

    def _beam_search(self, features: Tensor, initial: Tensor) -> tuple[list[list[int]], list[float], list[float]]:
        """Beam search with K = beam_size live beams per audio.

        Each step ranks the 2K best (beam, token) extensions by cumulative log-probability. A
        hypothesis that ends among the first K is finished, and the next unfinished extension
        takes its place, so K beams stay alive. An audio is done once it has round(K * patience)
        finished hypotheses; the best by log-probability / length ** length_penalty wins
        (CTranslate2's rules, so results match faster-whisper)."""
        options, eot, sample_len = self.options, self.tokenizer.eot, self.sample_len
        k_beams = options.beam_size
        n_audio, begin = initial.shape[0], initial.shape[1]
        max_done = round(k_beams * options.patience)
        tokens = initial.repeat_interleave(k_beams, dim=0)  # the beams of an audio share its features
        logits, no_speech = self._first_step(features, tokens)
        no_speech = no_speech[::k_beams]
        # All beams start equal: only the first is live at step 0, so the K extensions differ.
        scores = torch.full((n_audio, k_beams), -torch.inf, device=tokens.device)
        scores[:, 0] = 0
        fusion = None if options.lm is None else _ShallowFusion(options, self.tokenizer, self.prompt, tokens.shape[0],
                                                                logits.shape[-1], tokens.device)
        # (tokens, score, the decoder's own log-probability): the two differ only with an LM fused in.
        finished: list[list[tuple[list[int], float, float]]] = [[] for _ in range(n_audio)]
        done = [False] * n_audio
        for step in range(sample_len):
            last = step == sample_len - 1
            self.rules.apply(logits, tokens)
            logprobs = F.log_softmax(logits.float(), dim=-1)
            n_vocab = logprobs.shape[-1]
            ranked = logprobs if fusion is None else fusion.fused(logprobs, last)
            total = (ranked.view(n_audio, k_beams, n_vocab) + scores[:, :, None]).view(n_audio, -1)
            top_scores, top_ids = total.topk(2 * k_beams, dim=-1)
            sources, words = (top_ids // n_vocab).tolist(), (top_ids % n_vocab).tolist()
            top_scores = top_scores.tolist()
            top_logprobs = top_scores if fusion is None else fusion.logprobs(logprobs, top_ids)
            rows, next_words, next_scores, next_logprobs = [], [], [], []
            for a in range(n_audio):
                spare = k_beams  # next candidate to fill a slot whose hypothesis finished
                for k in range(k_beams):
                    pick = k
                    if not done[a] and (words[a][k] == eot or last):
                        seq = tokens[a * k_beams + sources[a][k], begin:].tolist()
                        finished[a].append((seq if words[a][k] == eot else seq + [words[a][k]], top_scores[a][k],
                                            top_logprobs[a][k]))
                        while spare < 2 * k_beams and words[a][spare] == eot:
                            spare += 1
                        if spare < 2 * k_beams:
                            pick, spare = spare, spare + 1
                    rows.append(a * k_beams + sources[a][pick])
                    next_words.append(words[a][pick])
                    next_scores.append(top_scores[a][pick])
                    next_logprobs.append(top_logprobs[a][pick])
                done[a] = done[a] or last or len(finished[a]) >= max_done
            if all(done):
                break
            if fusion is not None:
                fusion.advance(rows, next_words, next_logprobs)
            index = torch.tensor(rows, device=tokens.device)
            self.cache.reorder(index)
            new = torch.tensor(next_words, device=tokens.device)
            tokens = torch.cat([tokens.index_select(0, index), new[:, None]], dim=1)
            scores = torch.tensor(next_scores, device=tokens.device).view(n_audio, k_beams)
            logits = self._next(new[:, None], features)

        best = [_most_likely(f, options.length_penalty) for f in finished]
        return [b[0] for b in best], [b[2] for b in best], no_speech


def _most_likely(hypotheses: list[tuple], length_penalty: float) -> tuple:
    """The hypothesis (tokens, score, ...) with the best score / length ** length_penalty."""
    return max(hypotheses, key=lambda h: h[1] / max(len(h[0]), 1) ** length_penalty)


@lru_cache(maxsize=4)
def word_boundaries(tokenizer: TokenizerBase, n_vocab: int) -> tuple[bool, ...]:
    """For each of the n_vocab token ids: whether it ends the word before it, as a token whose
    text starts with a space does, and every special token (end of text, timestamps); the other
    tokens go on spelling the word. Cached: 50k decodes cost more than a short clip's search."""
    starts = [tokenizer.decode([i]).startswith(" ") for i in range(min(tokenizer.eot, n_vocab))]
    return tuple(starts) + (True,) * (n_vocab - len(starts))


class _ShallowFusion:
    """The language model's side of a beam search over N = B * K rows: each row's LM state after
    its finished words, the tokens of the word it is spelling, and its log-probability under the
    decoder alone, which `avg_logprob` (and so the fallback's checks) keeps meaning.

    A word is scored once it is complete, when the next token ends it (`word_boundaries`): every
    such token of a row gains the same α·ln p(word | history) + β (times the number of words the
    normaliser makes of it), end of text α·ln p(</s> | ...) more."""

    def __init__(self, options: DecodingOptions, tokenizer: TokenizerBase, prompt: list[int], n_rows: int,
                 n_vocab: int, device: torch.device):
        self.lm, self.alpha, self.beta = options.lm, options.lm_alpha, options.lm_beta
        self.tokenizer, self.eot = tokenizer, tokenizer.eot
        self.ends_word = word_boundaries(tokenizer, n_vocab)
        self.boundary = torch.tensor(self.ends_word, dtype=torch.float32, device=device)  # (V,)
        start = self.lm.start(tokenizer.decode([t for t in prompt if t < tokenizer.eot]))
        self.states: list[Hashable] = [start] * n_rows
        self.spelling: list[list[int]] = [[] for _ in range(n_rows)]
        self.logprob = torch.zeros(n_rows, device=device)
        self.after: list[Hashable] = self.states  # each row's state once its word is scored

    def fused(self, logprobs: Tensor, last: bool) -> Tensor:
        """logprobs (N, V) plus what each next token gains from the LM: its row's word gain on
        the tokens that end the word, and the end-of-text gain on <|endoftext|>. At the `last`
        step every hypothesis ends, so every token gains both: the word being spelt is scored as
        it stands (the last token's letters left out), so a beam cannot escape the LM by never
        finishing a word."""
        word_gain, end_gain, self.after = [], [], []
        for state, tokens in zip(self.states, self.spelling):
            logp, n_words, after = self.lm.score(state, self.tokenizer.decode(tokens)) if tokens else (0.0, 0, state)
            word_gain.append(self.alpha * logp + self.beta * n_words)
            end_gain.append(self.alpha * self.lm.end(after))
            self.after.append(after)
        gain, end = torch.tensor(word_gain, device=logprobs.device), torch.tensor(end_gain, device=logprobs.device)
        if last:
            return logprobs + (gain + end)[:, None]
        fused = logprobs + gain[:, None] * self.boundary
        fused[:, self.eot] += end
        return fused

    def logprobs(self, logprobs: Tensor, top_ids: Tensor) -> list[list[float]]:
        """The decoder-only log-probability of each candidate: logprobs (N, V) of this step,
        top_ids (B, 2K) indices into the flattened (K * V) candidates of each audio."""
        n_audio = top_ids.shape[0]
        return (logprobs + self.logprob[:, None]).view(n_audio, -1).gather(1, top_ids).tolist()

    def advance(self, rows: list[int], tokens: list[int], logprobs: list[float]) -> None:
        """The beams after a step: row i continues row rows[i] with tokens[i]."""
        states, spelling = [], []
        for row, token in zip(rows, tokens):
            if self.ends_word[token]:
                states.append(self.after[row])
                spelling.append([token] if token < self.eot else [])
            else:
                states.append(self.states[row])
                spelling.append([*self.spelling[row], token])
        self.states, self.spelling = states, spelling
        self.logprob = torch.tensor(logprobs, device=self.logprob.device)


@torch.no_grad()
def decode(model: Whisper, mel: Tensor, options: DecodingOptions = DecodingOptions(),
           tokenizer: TokenizerBase | None = None) -> list[DecodingResult]:
    """Decode a batch of 30-second windows: mel (B, n_mels, 3000) log-mel, or (B, 1500, D) audio
    features already encoded. `tokenizer` defaults to Whisper's for the model (`whisper_vocabulary`).
    One DecodingResult per audio."""
    if mel.ndim == 2:
        mel = mel[None]
    if mel.shape[-2:] == (model.dims.n_audio_ctx, model.dims.n_audio_state):
        features = mel.to(model.dtype)
    else:
        features = model.embed_audio(mel.to(model.device, model.dtype))
    return DecodingTask(model, tokenizer or whisper_vocabulary(model), options).run(features)


@torch.no_grad()
def decode_with_fallback(model: Whisper, features: Tensor, options: DecodingOptions, tokenizer: TokenizerBase,
                         fallback: FallbackOptions = FallbackOptions()) -> list[DecodingResult]:
    """Decode features (B, T, D); rows that fail the quality checks are decoded again, alone in a
    smaller batch, at the next temperature. Rows that are no speech (`FallbackOptions.is_no_speech`)
    come back as decoded: the caller drops their text."""
    results = DecodingTask(model, tokenizer, replace(options, temperature=fallback.temperatures[0])).run(features)
    attempts = [[r] for r in results]
    for temperature in fallback.temperatures[1:]:
        retry = [i for i, r in enumerate(results) if fallback.needs_fallback(r)]
        if not retry:
            break
        # Sampling at T > 0 explores; beam search is only used at T = 0, as in the reference.
        hotter = replace(options, temperature=temperature, beam_size=None)
        for i, r in zip(retry, DecodingTask(model, tokenizer, hotter).run(features[retry])):
            results[i] = r
            attempts[i].append(r)
    for i, r in enumerate(results):
        if fallback.needs_fallback(r):
            results[i] = fallback.best_attempt(attempts[i])
    return results
