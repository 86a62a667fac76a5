"""The package's architecture, checked: every module imports only from its own subpackage or from
the subpackages below it, no two modules import each other (directly or round a circle), and
nothing uses the old top-level names. Imports inside functions count as much as those at the top.

With the module graph acyclic and the layers one-way, a call from the command line goes down
once: cli -> inference.transcriber -> longform / clips -> decoding, timing, segments -> model."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "whisper_scratch"
# Top first; a subpackage may import from itself and from those after it only.
LAYERS = ["cli", "experiments", "demo", "training", "lm", "evaluation", "inference", "data", "model", "audio",
          "tokenizer", "common"]
OLD_TOP_LEVEL = {"tokenizer", "train", "transcribe"}  # installed as whisper_scratch.* since the layout moved


def _module_name(path: Path) -> str:
    """The dotted name of a file of the package; the tokenizer/ folder is whisper_scratch/tokenizer
    (a link), so its files go by their installed names."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "tokenizer":
        parts = ["whisper_scratch", *parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    """Every module of the package, the tokenizer's included (pathlib does not follow its link)."""
    found = {}
    for path in sorted([*PACKAGE.rglob("*.py"), *(REPO / "tokenizer").rglob("*.py")]):
        if "__pycache__" not in path.parts:
            found[_module_name(path)] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """The modules `name` imports, absolute, ours and others alike."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(name, path) if m in modules and m != name} for name, path in modules.items()}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_belongs_to_a_layer():
    loose = [m for m in _modules() if _layer(m) is None and m not in ("whisper_scratch", "whisper_scratch.__main__")]
    assert not loose, f"modules outside the subpackages: {loose}"


def test_imports_only_go_down_the_layers():
    wrong = []
    for module, imported in _graph().items():
        here = _layer(module)
        for target in imported:
            there = _layer(target)
            if here and there and LAYERS.index(there) < LAYERS.index(here):
                wrong.append(f"{module} imports {target} ({there} is above {here})")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_itself_round_a_circle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(circles)


def test_nothing_uses_the_old_top_level_names():
    files = {name: path for name, path in _modules().items()}
    for folder in ("tests", "bench", "scripts"):
        files.update({f"{folder}.{p.stem}": p for p in (REPO / folder).glob("*.py")})
    users = [f"{path.relative_to(REPO)} imports {imported}" for name, path in files.items()
             for imported in _imports(name, path) if imported.split(".")[0] in OLD_TOP_LEVEL]
    assert not users, "\n".join(users)


def test_the_command_line_modules_hold_no_library_code_that_others_import():
    """cli/ is the top: nothing below imports it, so what it holds is printing and exit codes."""
    importers = [m for m, imported in _graph().items() if _layer(m) != "cli" and m != "whisper_scratch.__main__"
                 and any(_layer(t) == "cli" for t in imported)]
    assert not importers, importers


def test_the_checker_sees_a_wrong_way_import(tmp_path, monkeypatch):
    """The rule itself: a model module importing inference is reported."""
    fake = tmp_path / "whisper_scratch"
    for sub in ("model", "inference"):
        (fake / sub).mkdir(parents=True)
        (fake / sub / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "inference" / "decoding.py").write_text("X = 1\n")
    (fake / "model" / "whisper.py").write_text("from ..inference.decoding import X\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    try:
        test_imports_only_go_down_the_layers()
    except AssertionError as e:
        assert "whisper_scratch.model.whisper imports whisper_scratch.inference.decoding" in str(e)
    else:
        raise AssertionError("the wrong-way import went unnoticed")
