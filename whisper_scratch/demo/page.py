"""A web page to try a model: upload or record audio, pick the language and the task, read the
transcript with its segment timestamps and download it as subtitles (.srt).
`whisper-scratch demo --model_path M` serves it (cli/demo.py).

Gradio draws the page (the optional extra `[demo]`); `Demo.transcribe` is the whole behaviour
behind the button and needs no Gradio. It runs on a CPU, and nothing leaves the machine:
Gradio's analytics and update check are off, and there is no share link.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..common.messages import one_line
from ..inference.decoding import DecodingOptions
from ..inference.options import TranscribeOptions
from ..inference.transcriber import transcribe_files
from ..inference.writers import format_timestamp, write_results
from ..model.loaded import LoadedModel, ModelError
from ..tokenizer import LANGUAGES, TokenizerBase

AUTO = "auto"  # the language choice that lets a multilingual model detect the language
TASKS = ("transcribe", "translate")
SEGMENT_HEADERS = ["start", "end", "text"]


class DemoError(ValueError):
    """Something the person can fix (no audio, an unreadable file, a task the model lacks): one line."""


@dataclass
class DemoOutput:
    text: str
    language: str | None  # the language decoded in, detected or chosen
    segments: list[list[str]]  # [start, end, text] per segment, times as [HH:]MM:SS.mmm
    srt: Path


@dataclass
class Demo:
    """A loaded model and what the page offers for it."""

    loaded: LoadedModel
    name: str = "model"
    workdir: Path | None = None  # where each request's .srt goes, in a folder of its own; default: the temp dir

    @property
    def vocabulary(self) -> TokenizerBase:
        return self.loaded.tokenizer

    def language_choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs: detection first, then the model's languages by name."""
        if not self.vocabulary.is_multilingual:
            return [("English", "en")]
        named = sorted((LANGUAGES.get(code, code).title(), code) for code in self.vocabulary.all_language_codes)
        return [("Detect the language", AUTO), *named]

    def tasks(self) -> list[str]:
        return list(TASKS) if self.vocabulary.is_multilingual else ["transcribe"]

    def transcribe(self, audio: str | Path | None, language: str = AUTO, task: str = "transcribe") -> DemoOutput:
        """Transcribe (or translate) one recording with timestamps and write its .srt."""
        if not audio:
            raise DemoError("no audio yet: upload a file or record from the microphone")
        if task not in self.tasks():
            raise DemoError(f"{self.name} is an English-only model: it cannot {task}; load a multilingual one"
                            if task in TASKS else f"unknown task {task!r}; use one of {', '.join(TASKS)}")
        code = None
        if self.vocabulary.is_multilingual and language != AUTO:
            try:
                code = self.loaded.language_code(language)
            except ModelError:
                raise DemoError(f"{self.name} does not know the language {language!r}") from None
        opts = TranscribeOptions(decoding=DecodingOptions(task=task, language=code, best_of=5, seed=0),
                                 batch_size=1, progress=False)
        results, failed = transcribe_files(self.loaded.model, [Path(audio)], opts, self.loaded.tokenizer)
        if failed:
            raise DemoError(failed[0][1])
        result = results[0]
        srt = Path(tempfile.mkdtemp(prefix="whisper-demo-", dir=self.workdir)) / f"{Path(audio).stem}.srt"
        write_results([result], srt)
        segments = [[format_timestamp(s["start"]), format_timestamp(s["end"]), s["text"]] for s in result["segments"]]
        return DemoOutput(result["text"], result["language"] or code, segments, srt)


def gradio_module():
    """Gradio, with its analytics and version check off before it is imported (they phone home)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        raise DemoError("the web demo needs Gradio: pip install 'whisper-scratch[demo]'") from None
    return gradio


def build_page(demo: Demo):
    """The Gradio Blocks page for `demo`; `.launch()` serves it."""
    gr = gradio_module()

    def run(audio: str | None, language: str, task: str):
        try:
            out = demo.transcribe(audio, language, task)
        except DemoError as e:
            raise gr.Error(str(e), print_exception=False) from None
        language_name = (LANGUAGES.get(out.language) or out.language or "").title()
        return out.text, language_name, out.segments, str(out.srt)

    choices = demo.language_choices()
    with gr.Blocks(title="Whisper-From-Scratch demo", analytics_enabled=False) as page:
        gr.Markdown(f"## Whisper-From-Scratch\nModel: `{demo.name}`. Upload or record audio, choose the "
                    "language and the task, then press Transcribe.")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio", elem_id="audio")
                language = gr.Dropdown(choices=choices, value=choices[0][1], label="Language", elem_id="language",
                                       interactive=len(choices) > 1)
                task = gr.Radio(choices=demo.tasks(), value="transcribe", label="Task", elem_id="task")
                button = gr.Button("Transcribe", variant="primary", elem_id="transcribe")
            with gr.Column():
                text = gr.Textbox(label="Transcript", lines=4, elem_id="transcript")
                detected = gr.Textbox(label="Language of the transcript", elem_id="detected")
                segments = gr.Dataframe(headers=SEGMENT_HEADERS, label="Segments", elem_id="segments",
                                        interactive=False, wrap=True, column_widths=["18%", "18%", "64%"])
                srt = gr.File(label="Subtitles (.srt)", elem_id="srt")
        button.click(run, [audio, language, task], [text, detected, segments, srt])
    return page


def load_demo(model_path: str, device: str = "cpu", dtype: str | None = None) -> Demo:
    """The model and the vocabulary beside it; DemoError (one line) when they cannot be loaded."""
    try:
        return Demo(LoadedModel.load(model_path, device=device, dtype=dtype), name=str(model_path))
    except FileNotFoundError as e:
        raise DemoError(f"cannot load model {model_path}: {one_line(e)}") from None
    except ModelError as e:
        raise DemoError(str(e)) from None
