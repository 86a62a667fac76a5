"""A web page to try a model (whisper_scratch.demo.page), served until Ctrl-C:

  whisper-scratch demo --model_path runs/demo/best      (then open http://127.0.0.1:7860)
"""
from __future__ import annotations

import argparse
import sys

import torch

from ..common.messages import one_line
from ..common.precision import DTYPES
from ..demo.page import DemoError, build_page, gradio_module, load_demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="whisper-scratch demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", "--model-path", "--model", required=True,
                   help="any checkpoint transcribe.py loads: a size name, an OpenAI .pt, a Hugging Face or "
                        "CTranslate2 folder, or one of ours (runs/demo/best)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="default fp16 on GPU, fp32 on CPU")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface; browsers "
                                                       "allow the microphone only on localhost or over HTTPS)")
    p.add_argument("--port", type=int, default=None, help="port to serve on (default: the first free from 7860)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve the page until Ctrl-C; 2 with one line on stderr when the model or Gradio is missing."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        gradio_module()  # before the model loads: a missing extra costs no waiting
        page = build_page(load_demo(args.model_path, args.device, args.dtype))
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        # Serves until Ctrl-C (Gradio stops itself then); a Ctrl-C while it is still starting lands here.
        page.queue().launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False,
                            ssr_mode=False)
    except KeyboardInterrupt:
        page.close()
    except OSError as e:  # the port is taken
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
