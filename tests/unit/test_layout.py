"""The house's rules, read from the source: imports point down the layers, no import circle,
no module reaches into another's underscore names."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "helpers"
# lower numbers are lower layers; a module may import only its own layer's package or lower ones
LAYERS = {"errors": 0, "paths": 0, "files": 0, "data": 0, "extensions": 0, "model": 1, "evaluation": 2, "editing": 2, "runs": 3,
          "report": 4}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ("helpers",) + path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """``(imported module, names taken from it, line)`` for every import in ``module``,
    those inside functions included."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("helpers")]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if not target.startswith("helpers"):
                continue
            for a in node.names:  # `from . import x` imports the module x
                sub = f"{target}.{a.name}"
                out.append((sub, [], node.lineno) if sub in MODULES else (target, [a.name], node.lineno))
    return out


def _owner(module: str) -> str:
    """The module an import refers to, or the package that holds it."""
    while module not in MODULES and "." in module:
        module = module.rsplit(".", 1)[0]
    return module


def _layer(module: str) -> tuple[str, int]:
    top = module.split(".")[1] if module.count(".") else ""
    return top, LAYERS.get(top, -1)


def test_every_module_belongs_to_a_layer():
    assert {_layer(m)[1] for m in MODULES if m != "helpers"} >= {0}
    assert [m for m in MODULES if m != "helpers" and _layer(m)[1] < 0] == []


def test_imports_point_down_the_layers():
    wrong = []
    for module in MODULES:
        if module == "helpers":
            continue  # the public surface re-exports every layer
        top, level = _layer(module)
        for target, _, line in _imports(module):
            ttop, tlevel = _layer(_owner(target))
            if ttop != top and (tlevel > level or tlevel == level and level > 0):
                wrong.append(f"{module}:{line} imports {target} ({ttop}, layer {tlevel} >= {top}, layer {level})")
    assert wrong == []


def test_no_import_circle():
    graph = {m: {_owner(t) for t, _, _ in _imports(m)} - {m} for m in MODULES}
    # a package's __init__ re-exports its modules: importing the package is importing them
    seen, stack, circles = set(), [], []

    def visit(m):
        if m in stack:
            circles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for n in graph.get(m, ()):
            if n != "helpers" and not m.startswith(n + "."):  # a module may import the package that holds it
                visit(n)
        stack.pop()

    for m in MODULES:
        visit(m)
    assert circles == []


def test_no_module_imports_another_modules_underscore_names():
    wrong = []
    for module in MODULES:
        for target, names, line in _imports(module):
            if _owner(target) != module:
                wrong += [f"{module}:{line} imports {n} from {target}" for n in names if n.startswith("_")]
        tree = ast.parse(MODULES[module].read_text(encoding="utf8"))
        imported = {a.asname or a.name.split(".")[-1] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    for a in node.names if f"{_resolve(module, node)}.{a.name}" in MODULES}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in imported \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                wrong.append(f"{module}:{node.lineno} reads {node.value.id}.{node.attr}")
    assert wrong == []


def test_nothing_cites_a_file_outside_the_project():
    """Users have docs/, not the reference file the package was built from: no file of the package,
    the notebooks, the README or docs/ names it."""
    import re

    base = Path(__file__).resolve().parents[2]
    files = [*ROOT.rglob("*.py"), *(base / "notebooks").rglob("*.*"), base / "README.md", *(base / "docs").rglob("*.*")]
    hits = [f"{f.relative_to(base)}: {m.group(0)}" for f in files
            for m in re.finditer(r"SPEC( ?§|\.md)", f.read_text(encoding="utf8"))]
    assert hits == []
