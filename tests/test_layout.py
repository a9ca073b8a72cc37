"""The package's layout (issue 14): each layer imports only from itself and the layers below it, the
layers below ``nn/`` import no torch, and the package's top level holds only real modules: the 21
compatibility aliases of the flat names (and ``analysis``) are gone (issue 22), and every shipped
checkpoint and compressed file still loads without them.

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


SOURCES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)
MODULES = SOURCES
# the flat module names removed in issue 22 (each was a two-line alias of the module in its layer)
REMOVED = ("_kernels", "analysis", "atomic", "checkpoints", "codecs", "data", "dual", "fileformat", "grid",
           "networks", "params", "paths", "preprocessing", "progress", "ptq", "quant_range", "quantization",
           "reference", "regularizer", "subproblem", "thesis", "training")


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
        if t_rank < rank or (pkg and t_pkg == pkg) or (rank == TOP and t_rank == TOP):
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


def test_the_top_level_holds_only_real_modules():
    """No module of the package's top level replaces itself in ``sys.modules`` or is a bare re-export."""
    bad = []
    for p in sorted(PKG.glob("*.py")):
        tree = ast.parse(p.read_text())
        if any(isinstance(t, ast.Subscript) and ast.unparse(t.value) == "sys.modules"
               for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets):
            bad.append(f"{p.name} replaces itself in sys.modules")
        defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign))]
        if p.name != "__init__.py" and not defs:
            bad.append(f"{p.name} defines nothing")
    assert not bad, bad
    assert not [n for n in REMOVED if (PKG / f"{n}.py").exists()]


def _repo_python() -> list[tuple[str, str]]:
    """(where, source) of the repository's Python: the package, tests,
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


def test_nothing_in_the_repository_names_a_removed_module():
    names = "|".join(REMOVED)
    in_string = re.compile(rf"^metaq_utils\.({names})(\.\w+)*$|\b(import|from)\s+metaq_utils\.({names})\b"
                           rf"|\bfrom\s+metaq_utils\s+import\s+[\w, ]*\b({names})\b")
    bad = []
    for where, src in _repo_python():
        tree = ast.parse(src)
        package = _module_name(REPO / where) if where.startswith("metaq_utils/") else None
        if package is not None and not where.endswith("__init__.py"):
            package = package.rsplit(".", 1)[0]
        for line, target in _imports(tree, package):
            if target.split(".")[1:2] and target.split(".")[1] in REMOVED:
                bad.append(f"{where}:{line}: import of {target}")
        for node in ast.walk(tree):   # monkeypatch targets, subprocess code, importlib names
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and in_string.search(node.value):
                bad.append(f"{where}:{node.lineno}: {node.value[:80]!r}")
    assert not bad, "import the modules in their layers:\n" + "\n".join(bad)


UNREADABLE_SINCE_WRITTEN = {
    "runs/ablation/e12/none_seed0/none_seed0_CQ32.huffman.mtq": "non-zero padding bits",
    "runs/ablation/e12/none_seed0/none_seed0_CQ32.range.mtq": "sparse table lists an absent symbol",
    "runs/reproduction/thesis_seed0/thesis_seed0_CQ55.huffman.mtq": "non-zero padding bits",
    "runs/reproduction/thesis_seed0/thesis_seed0_CQ55.range.mtq": "sparse table lists an absent symbol",
}


def test_the_four_unreadable_run_artefacts_still_fail_with_a_clear_error():
    from metaq_utils.coding.fileformat import CompressedFileError, read_compressed

    for f, why in UNREADABLE_SINCE_WRITTEN.items():
        with pytest.raises(CompressedFileError, match=why):
            read_compressed(REPO / f)


def test_every_shipped_checkpoint_and_file_loads_without_the_removed_modules():
    """In a fresh interpreter: every tracked checkpoint (``*.pt``) loads and verifies with
    :func:`load_checkpoint` and every tracked compressed file (``*.mtq``) decodes, and none of the removed
    flat module names was imported on the way (no pickle in them names one).

    Four run artefacts of the ablation and the thesis reproduction (not shipped) were already unreadable at
    the commit that added them (37662d0: "non-zero padding bits" / "sparse table lists an absent symbol");
    they are listed, and must still fail the same way, not silently."""
    files = subprocess.run(["git", "ls-files", "*.pt", "*.mtq"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    files = [f for f in files if f not in UNREADABLE_SINCE_WRITTEN]
    assert len(files) >= 50
    code = (f"import sys\nfiles = {files!r}\n"
            "from metaq_utils.nn.checkpoints import load_checkpoint\n"
            "from metaq_utils.coding.fileformat import read_compressed\n"
            "for f in files:\n"
            "    ck = load_checkpoint(f) if f.endswith('.pt') else read_compressed(f)\n"
            "    assert ck.arch, f\n"
            f"bad = [m for m in sys.modules if m.split('.')[1:2] and m.split('.')[0] == 'metaq_utils' and m.split('.')[1] in {REMOVED!r}]\n"
            "assert not bad, bad\n"
            "print(len(files))")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert int(res.stdout.split()[-1]) == len(files)


MAX_MODULE_LINES = 800      # issue 22: a module a reader can hold; split anything longer


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_no_module_is_over_800_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{path.relative_to(REPO)} has {n} lines (limit {MAX_MODULE_LINES}): split it"


def _import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (any import, at top level or inside a function; a package's
    ``__init__`` counts as the package). Only edges to real modules of ours are kept."""
    names = {_module_name(p) for p in MODULES}
    graph: dict[str, set[str]] = {}
    for p in MODULES:
        name = _module_name(p)
        package = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
        graph[name] = {t for _, t in _imports(ast.parse(p.read_text()), package) if t in names and t != name}
    return graph


def test_the_package_has_no_import_cycle():
    """No chain of imports runs back to its start (issue 22: coding.codecs imported coding.context,
    which imported codecs' helpers back). Packages re-exporting their own modules (``x/__init__`` ->
    ``x.y``) are the one allowed back-edge: ``x.y`` importing the package ``x`` is not counted."""
    import graphlib

    graph = _import_graph()
    for name, deps in graph.items():   # x.y -> x (its own package's __init__) is how Python resolves x.y anyway
        deps -= {d for d in deps if name.startswith(d + ".")}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle in metaq_utils: {' -> '.join(e.args[1])}")


def test_the_cycle_check_detects_a_cycle():
    """The check above is not vacuous: the old coding.codecs <-> coding.context pair is a cycle to it."""
    import graphlib

    graph = _import_graph()
    graph["metaq_utils.coding.bitio"] = graph.get("metaq_utils.coding.bitio", set()) | {"metaq_utils.coding.context"}
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter(graph).static_order())
