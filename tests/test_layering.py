"""The package's layers hold: a module imports only its own sub-package and lower ones.

Lowest first: core (shared), faces (01), synthesis (02), loading (03), training (04), evaluation
(05), deploy (06); then the top level (the command line, the notebook runner, the report) and
``bench/``. ``masktheface_patch/`` is a synthesis backend and sits with synthesis. Every import is
read from the source (ast), lazy ones inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "faces", "synthesis", "loading", "training", "evaluation", "deploy")
TOP = len(LAYERS)
TOP_MODULES = {"__init__", "__main__", "cli_common", "cli_deploy", "pipeline", "report", "bench"}


def layer_of(module: str) -> int:
    """The layer of a dotted module of the project (``maskdet.x.y`` or ``masktheface_patch``)."""
    parts = module.split(".")
    if parts[0] == "masktheface_patch":
        return LAYERS.index("synthesis")
    if len(parts) == 1:
        return TOP
    if parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    if parts[1] in TOP_MODULES:
        return TOP
    raise ValueError(f"{module}: not in a layer (put it in a sub-package of maskdet/)")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every project import of a file, relative ones resolved; ``from P
    import m`` counts as importing ``P.m`` when m is a module of package P."""
    me = module_name(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[: len(package) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                sub = ROOT.joinpath(*base.split("."), a.name)
                is_module = sub.with_suffix(".py").exists() or (sub / "__init__.py").exists()
                out.append((node.lineno, f"{base}.{a.name}" if is_module else base))
    return [(n, m) for n, m in out if m.split(".")[0] in ("maskdet", "masktheface_patch")]


def upward_imports(path: Path) -> list[str]:
    """``file:line: A (layer) imports B (higher layer)`` for each import that runs back up."""
    me = module_name(path)
    mine = layer_of(me)
    return [
        f"{path.relative_to(ROOT)}:{line}: {me} ({mine}) imports {target} ({layer_of(target)})"
        for line, target in imported(path)
        if layer_of(target) > mine
    ]


SOURCES = sorted((ROOT / "maskdet").rglob("*.py")) + sorted(
    (ROOT / "masktheface_patch").rglob("*.py")
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_runs_from_a_lower_layer_to_a_higher_one(path: Path):
    assert upward_imports(path) == []


def test_every_module_of_maskdet_sits_in_a_layer():
    loose = [p.name for p in (ROOT / "maskdet").glob("*.py") if p.stem not in TOP_MODULES]
    assert loose == [], f"top-level modules outside every layer: {loose}"


@pytest.mark.parametrize("layer", LAYERS)
def test_each_sub_package_says_what_its_stage_does_and_its_public_names(layer: str):
    init = ROOT / "maskdet" / layer / "__init__.py"
    tree = ast.parse(init.read_text())
    assert ast.get_docstring(tree), f"{init}: no docstring"
    package = __import__(f"maskdet.{layer}", fromlist=["__all__"])
    for name in package.__all__:
        assert getattr(package, name) is not None


def test_an_upward_import_is_caught(tmp_path, monkeypatch):
    """The check itself can fail: core importing deploy, even lazily, is reported."""
    fake = tmp_path / "maskdet" / "core"
    fake.mkdir(parents=True)
    (tmp_path / "maskdet" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "errors.py").write_text("def f():\n    from ..deploy import kiosk\n")
    (tmp_path / "maskdet" / "deploy").mkdir()
    (tmp_path / "maskdet" / "deploy" / "kiosk.py").write_text("")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert upward_imports(fake / "errors.py") == [
        "maskdet/core/errors.py:2: maskdet.core.errors (0) imports maskdet.deploy.kiosk (6)"
    ]
