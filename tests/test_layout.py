"""The package's layout (issue 14): each layer imports only from itself and the layers below it, the
layers below ``nn/`` import no torch, and the old flat module names are compatibility aliases that
nothing in the repository imports through.

Layers, bottom to top (README, "What is here"):

    store < core < quant < coding < nn < studies, baselines, recipes < the top-level modules

Imports are read with ``ast`` (every ``import``, also those inside functions), so a lazy import
counts like any other.
"""
from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "metaq_utils"

LAYERS = {"store": 0, "core": 1, "quant": 2, "coding": 3, "nn": 4, "studies": 5, "baselines": 5, "recipes": 5}
TOP = 6                                     # pipeline, frontier, ablation, batch, ..., __main__
TORCH_FREE = ("store", "core", "quant", "coding")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_alias(path: Path) -> bool:
    """A top-level module whose body replaces itself in ``sys.modules`` (the compatibility aliases)."""
    if path.parent != PKG:
        return False
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Subscript) and ast.unparse(t.value) == "sys.modules" for t in node.targets):
            return True
    return False


SOURCES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)
ALIASES = {p.stem: p for p in SOURCES if _is_alias(p)}
MODULES = [p for p in SOURCES if p.stem not in ALIASES or p.parent != PKG]


def _exists(name: str) -> bool:
    rel = Path(*name.split("."))
    return (REPO / rel.with_suffix(".py")).is_file() or (REPO / rel / "__init__.py").is_file()


def _imports(tree: ast.AST, package: str | None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``tree``; relative ones resolved against
    ``package``; ``from P import x`` counts as ``P.x`` when that is a module, else ``P``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if package is None:
                    continue
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.append((node.lineno, sub if _exists(sub) else mod))
    return [(line, m) for line, m in out if m == "metaq_utils" or m.startswith("metaq_utils.")]


def _layer(name: str) -> tuple[int, str]:
    """(rank, package) of a module of ours: the root package ranks lowest (it holds ``__version__``)."""
    parts = name.split(".")
    if len(parts) == 1:
        return -1, "metaq_utils"
    if parts[1] in LAYERS:
        return LAYERS[parts[1]], parts[1]
    return TOP, ""


def test_layers_are_the_documented_ones():
    subpackages = {p.parent.name for p in PKG.glob("*/__init__.py")}
    assert subpackages == set(LAYERS), "a new sub-package needs a place in LAYERS (and in the README's map)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_only_go_downward(path):
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    rank, pkg = _layer(name)
    bad = []
    for line, target in _imports(ast.parse(path.read_text()), package):
        t_rank, t_pkg = _layer(target)
        if target.split(".")[1:2] and target.split(".")[1] in ALIASES:
            bad.append(f"line {line}: {target} is a compatibility alias; import the module in its layer")
        elif t_rank < rank or (pkg and t_pkg == pkg) or (rank == TOP and t_rank == TOP):
            continue
        else:
            bad.append(f"line {line}: {target} (layer {t_pkg or 'top'}) is above {name} (layer {pkg or 'top'})")
    assert not bad, "\n".join(bad)


def test_the_layers_below_nn_import_no_torch():
    names = [_module_name(p) for p in MODULES if p.relative_to(PKG).parts[0] in TORCH_FREE]
    assert len(names) >= 15
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "    assert 'torch' not in sys.modules, name + ' imports torch'\n"
            "print(len(sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


def test_each_alias_is_the_moved_module_itself():
    assert len(ALIASES) == 21
    for old, path in ALIASES.items():
        (node,) = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)]
        layer = node.module
        assert layer in LAYERS and (PKG / layer / f"{old}.py").is_file(), old
        alias = importlib.import_module(f"metaq_utils.{old}")
        assert alias is importlib.import_module(f"metaq_utils.{layer}.{old}")
        assert alias.__name__ == f"metaq_utils.{layer}.{old}"
        assert getattr(importlib.import_module("metaq_utils"), old) is alias


def _repo_python() -> list[tuple[str, str]]:
    """(where, source) of the repository's Python outside the aliases: the package, tests,
    experiments, bench, scripts, and the notebooks' code cells (IPython magics dropped)."""
    out = [(str(p.relative_to(REPO)), p.read_text()) for p in MODULES]
    for folder in ("tests", "experiments", "bench", "scripts"):
        out += [(str(p.relative_to(REPO)), p.read_text()) for p in sorted((REPO / folder).rglob("*.py"))]
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
            if cell["cell_type"] == "code":
                src = "".join(cell["source"])
                src = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in src.splitlines())
                out.append((f"{nb.relative_to(REPO)} cell {i}", src))
    return out


def test_nothing_in_the_repository_imports_through_an_alias():
    names = "|".join(sorted(ALIASES))
    in_string = re.compile(rf"^metaq_utils\.({names})(\.\w+)*$|\b(import|from)\s+metaq_utils\.({names})\b"
                           rf"|\bfrom\s+metaq_utils\s+import\s+[\w, ]*\b({names})\b")
    bad = []
    for where, src in _repo_python():
        tree = ast.parse(src)
        package = _module_name(REPO / where) if where.startswith("metaq_utils/") else None
        if package is not None and not where.endswith("__init__.py"):
            package = package.rsplit(".", 1)[0]
        for line, target in _imports(tree, package):
            if target.split(".")[1:2] and target.split(".")[1] in ALIASES:
                bad.append(f"{where}:{line}: import of {target}")
        for node in ast.walk(tree):   # monkeypatch targets, subprocess code, importlib names
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and in_string.search(node.value):
                bad.append(f"{where}:{node.lineno}: {node.value[:80]!r}")
    assert not bad, "import the modules in their layers, not through the aliases:\n" + "\n".join(bad)


def test_objects_pickled_under_the_old_names_still_load():
    import pickle

    from metaq_utils.core.grid import Grid
    from metaq_utils.nn.ptq import SweepPoint
    old = "grid"   # a pickle written before the move names the class by its flat module path
    assert pickle.loads(f"cmetaq_utils.{old}\nGrid\n.".encode()) is Grid
    old = "ptq"
    data = pickle.dumps(SweepPoint(8, 0.99, 1000.0, 8), protocol=0)
    assert b"metaq_utils.nn.ptq" in data
    assert pickle.loads(data.replace(b"metaq_utils.nn.ptq", f"metaq_utils.{old}".encode())) == SweepPoint(8, 0.99, 1000.0, 8)
