"""n-gram language models of a language's text: estimated from text files (modified Kneser-Ney,
`kneser_ney`), written and read as ARPA files (`arpa`), and scored as the word scorer that beam
search fuses in (`fusion`); `command` is `python -m whisper_scratch.lm`."""
