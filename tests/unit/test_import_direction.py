"""The package's dependency direction (README "Layout"), read from every import statement.

cli -> (bench, export, serve, report) -> engine -> (models, data) -> (zoo, hub) -> errors.
Imports inside functions count too: a lazy import still couples the modules. The whole
package is parsed with ``ast``, nothing is imported, so the test takes well under a second.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "isaseg_cli"
NAME = PACKAGE.name

# Which of the package's parts each part may import (itself and ``errors`` always). The top
# modules: ``api`` is a front like ``cli``; ``__main__`` only starts the CLI.
FRONTS = {"bench", "export", "serve", "report"}
SHARED = {"engine", "models", "data", "zoo", "hub"}
ALLOWED: dict[str, set[str]] = {
    "cli": {"root", *FRONTS, *SHARED},
    "__main__": {"cli"},
    "api": {"root", *SHARED},
    **{front: {"root", *SHARED} for front in FRONTS},
    "engine": {"root", "models", "data", "zoo", "hub"},
    "models": {"zoo"},
    "data": {"zoo"},
    "zoo": set(),
    "hub": set(),
    "errors": set(),
    "root": set(),
}
# Two sideways edges between fronts: the export benchmark times an exported model with bench's
# timing loop (so both report the same statistics), and serve runs a model in an exported
# backend (onnxruntime, openvino) that export makes on first use.
ALLOWED["export"].add("bench")
ALLOWED["serve"].add("export")
# zoo and hub are leaves: of the package only errors and the zoo.spec types, and no array library.
LEAVES = {"zoo", "hub"}
HEAVY = {"torch", "numpy", "cv2", "PIL", "torchvision"}
# Libraries with one home: the terminal UI in cli (rich in _render.py alone), the HTTP stack in
# serve, plots in report. Optional backends (onnxruntime, openvino) go through engine.extras.
HOMES = {
    "typer": f"{NAME}.cli", "click": f"{NAME}.cli", "rich": f"{NAME}.cli._render",
    "fastapi": f"{NAME}.serve", "starlette": f"{NAME}.serve", "uvicorn": f"{NAME}.serve",
    "prometheus_client": f"{NAME}.serve", "matplotlib": f"{NAME}.report",
}  # fmt: skip


def part_of(module: str) -> str:
    """``isaseg_cli.engine.infer.fast`` -> ``engine``; ``isaseg_cli`` or a name defined in the
    package's ``__init__`` (``isaseg_cli.__version__``) -> ``root``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "root"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute name) of every import in the file, relative ones resolved. For
    ``from X import y`` both ``X`` and ``X.y`` (``y`` may be a submodule), except that
    ``from isaseg_cli import y`` gives only ``isaseg_cli.y``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base != NAME:
                found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def violations() -> list[str]:
    found = []
    for path in sources():
        source = part_of(module_name(path))
        where = path.relative_to(PACKAGE.parent)
        for line, target in imported_modules(path):
            top = target.split(".")[0]
            if source in LEAVES and top in HEAVY:
                found.append(f"{where}:{line} imports {target} (zoo and hub import no {top})")
            if top != NAME:
                continue
            part = part_of(target)
            if part in {source, "errors"}:
                continue
            if source in LEAVES:
                if target != f"{NAME}.zoo" and not target.startswith(f"{NAME}.zoo.spec"):
                    found.append(f"{where}:{line} imports {target} (a leaf imports only errors "
                                 "and zoo.spec)")  # fmt: skip
            elif part not in ALLOWED[source]:
                found.append(f"{where}:{line}: {source} imports {target}")
    return sorted(set(found))


def test_the_parser_sees_the_package() -> None:
    assert len(sources()) > 60
    assert part_of(f"{NAME}.engine.infer.fast") == "engine" and part_of(NAME) == "root"
    folders = {path.name for path in PACKAGE.iterdir() if path.is_dir()} - {"__pycache__"}
    assert folders <= set(ALLOWED), "a new part of the package needs its rule here"


def test_relative_and_lazy_imports_are_resolved(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path / NAME)
    fake = tmp_path / NAME / "engine" / "infer"
    fake.mkdir(parents=True)
    (fake / "x.py").write_text("def f():\n    from ...models import heads\n    from . import y\n")
    assert [name for _, name in imported_modules(fake / "x.py")] == [
        f"{NAME}.models", f"{NAME}.models.heads", f"{NAME}.engine.infer", f"{NAME}.engine.infer.y"
    ]  # fmt: skip


def test_a_violation_would_be_caught(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A models module that imports the engine, and a hub module that imports torch."""
    fake = tmp_path / NAME
    (fake / "models").mkdir(parents=True)
    (fake / "hub").mkdir()
    (fake / "models" / "bad.py").write_text("def f():\n    from ..engine import device\n")
    (fake / "hub" / "bad.py").write_text(
        "import torch\nfrom isaseg_cli import errors\nfrom isaseg_cli.zoo import catalog, spec\n"
    )
    monkeypatch.setattr(f"{__name__}.PACKAGE", fake)
    assert violations() == [
        f"{NAME}/hub/bad.py:1 imports torch (zoo and hub import no torch)",
        f"{NAME}/hub/bad.py:3 imports {NAME}.zoo.catalog (a leaf imports only errors and zoo.spec)",
        f"{NAME}/models/bad.py:2: models imports {NAME}.engine",
        f"{NAME}/models/bad.py:2: models imports {NAME}.engine.device",
    ]


def test_each_library_is_imported_only_in_its_home() -> None:
    found = []
    for path in sources():
        module = module_name(path)
        for line, target in imported_modules(path):
            home = HOMES.get(target.split(".")[0])
            if home is not None and module != home and not module.startswith(f"{home}."):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not found, "libraries imported outside their home:\n" + "\n".join(sorted(set(found)))


def test_imports_follow_the_dependency_direction() -> None:
    found = violations()
    assert not found, "imports against the dependency direction:\n" + "\n".join(found)
