"""A hand-written PyTorch Whisper to fine-tune, train from scratch and run on low-resource languages
and noisy speech.

Subpackages by job; each imports only from the ones below it (tests/test_layers.py checks):

  cli          command lines: argparse, printing, exit codes (transcribe, train, export, tokenizer, demo)
  experiments  the noise-robustness study of docs/noise.md, built from the trainer's pieces
  demo         the web page to try a model
  training     TrainConfig, datasets, augmentation, encoder cache, setup, resumable state, the loop
  evaluation   normalisers, WER/CER, evaluation of a listing, evaluation under noise
  inference    DecodingTask and fallback, clips, long-form, VAD batching, word timing, writers
  data         listings: manifests, Common Voice folders, Hugging Face datasets; train/eval splits
  model        the network, LoRA, checkpoint formats, export, downloads, LoadedModel
  audio        files to samples, log-mel, frame geometry, noise mixing
  tokenizer    Whisper's BPE and SentencePiece vocabularies (the top-level tokenizer/ folder)
  common       atomic files, one-line messages, precision names
"""
