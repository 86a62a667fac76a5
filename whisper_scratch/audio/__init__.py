"""Audio: files to samples (`io`), samples to log-mel (`features`), where frames and tokens sit in
time (`geometry`), and noise mixed in at a given SNR (`noise`)."""
