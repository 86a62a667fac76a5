"""A hand-written PyTorch Whisper."""
