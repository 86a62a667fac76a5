"""The web page to try a model (Gradio, the optional [demo] extra)."""
