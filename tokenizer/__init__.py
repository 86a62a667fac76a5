"""Tokenizers with Whisper's special-token layout: Whisper's own byte BPE and trainable SentencePiece."""
from .base import TokenizerBase
from .languages import LANGUAGES, TO_LANGUAGE_CODE
from .loading import load_tokenizer_dir, tokenizer_beside
from .sentencepiece_tokenizer import SentencePieceWhisperTokenizer, train_sentencepiece
from .whisper_bpe import WhisperTokenizer, get_tokenizer

__all__ = [
    "LANGUAGES",
    "TO_LANGUAGE_CODE",
    "SentencePieceWhisperTokenizer",
    "TokenizerBase",
    "WhisperTokenizer",
    "get_tokenizer",
    "load_tokenizer_dir",
    "tokenizer_beside",
    "train_sentencepiece",
]
