"""scripts/clean_notebooks.py: the committed notebooks name the workspace kernel and carry no stale
progress bars, warnings or absolute paths; the cleaner itself is idempotent and never touches
sources or the outputs nbval checks."""
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("clean_notebooks", REPO / "scripts" / "clean_notebooks.py")
clean = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(clean)

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def kernel():
    spec = clean.kernel_json()
    return spec, clean.kernel_python_version(spec)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_clean(path, kernel):
    nb = json.loads(path.read_text(encoding="utf-8"))
    found = clean.problems(nb, clean.clean_notebook(nb, *kernel))
    assert not found, f"{path.name} is not clean: {found}; run: python scripts/clean_notebooks.py"


def test_notebooks_name_the_kernel_setup_registers(kernel):
    spec, _ = kernel
    if spec is None:
        pytest.skip("no 'metaq' kernel installed (make setup registers it in .venv)")
    for path in NOTEBOOKS:
        ks = json.loads(path.read_text(encoding="utf-8"))["metadata"]["kernelspec"]
        assert ks == {"name": "metaq", "display_name": spec["display_name"], "language": "python"}, path.name
    assert spec["display_name"] == clean.DEFAULT_DISPLAY_NAME
    venv_kernel = REPO / ".venv" / "share" / "jupyter" / "kernels" / "metaq" / "kernel.json"
    assert venv_kernel.is_file(), "the kernel is registered inside .venv (per clone), not per user"
    assert json.loads(venv_kernel.read_text())["argv"][0] == str(REPO / ".venv" / "bin" / "python")


def _stream(name, text):
    return {"name": name, "output_type": "stream", "text": text.splitlines(keepends=True)}


def dirty_notebook():
    bar_widget = {"data": {"application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                                       "version_minor": 0},
                           "text/plain": ["C_Q sweep:   0%|          | 0/70 [00:00<?, ?it/s]"]},
                  "metadata": {}, "output_type": "display_data"}
    figure = {"data": {"image/png": "iVBORw0KGgo=", "text/plain": ["<Figure size 10x10 with 1 Axes>"]},
              "metadata": {}, "output_type": "display_data"}
    return {
        "cells": [
            {"cell_type": "code", "execution_count": 1, "id": "a", "metadata": {}, "source": ["import x\n"],
             "outputs": [_stream("stderr", "/home/someone/clone/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: "
                                           "TqdmWarning: IProgress not found.\n  from .autonotebook import tqdm\n")]},
            {"cell_type": "code", "execution_count": 2, "id": "b", "metadata": {}, "source": ["train()\n"],
             "outputs": [_stream("stderr", "\repoch 1/2:   0%|          | 0/938 [00:00<?, ?it/s]"),
                         _stream("stderr", "\repoch 1/2:  50%|█████     | 469/938 [00:10<00:10, 46.9it/s]"),
                         _stream("stdout", "epoch   1  loss 2.1  saved to /work/main/BestModelsBeforeQuantization/n.pt\n"),
                         _stream("stderr", "\r                              \r"),
                         _stream("stdout", "epoch   2  loss 1.0\n"),
                         _stream("stderr", "sweep: 35/70 (50%) [00:30<00:30, 1.17it/s]\n"),
                         _stream("stderr", "a real message on stderr\n")]},
            {"cell_type": "code", "execution_count": 3, "id": "c", "metadata": {}, "source": ["sweep()\n"],
             "outputs": [bar_widget, figure]},
            {"cell_type": "code", "execution_count": 4, "id": "d", "metadata": {},
             "source": ["# NBVAL_CHECK_OUTPUT\n", "check()\n"],
             "outputs": [_stream("stderr", "/tmp/x.py:1: UserWarning: kept, nbval checks it\n")]},
            {"cell_type": "markdown", "id": "e", "metadata": {}, "source": ["see /home/a/b.txt\n"]},
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python", "version": "3.11.7"},
                     "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}}},
        "nbformat": 4, "nbformat_minor": 5}


def test_the_cleaner_removes_bars_warnings_paths_and_keeps_the_rest():
    nb = dirty_notebook()
    spec = {"display_name": "Python (METaQ)", "argv": ["/x/python"]}
    out = clean.clean_notebook(nb, spec, "3.11.9")
    assert out["metadata"]["kernelspec"] == {"display_name": "Python (METaQ)", "language": "python", "name": "metaq"}
    assert out["metadata"]["language_info"]["version"] == "3.11.9"
    assert out["metadata"]["language_info"]["pygments_lexer"] == "ipython3"
    assert "widgets" not in out["metadata"]
    assert out["cells"][0]["outputs"] == []
    assert out["cells"][1]["outputs"] == [
        _stream("stdout", "epoch   1  loss 2.1  saved to BestModelsBeforeQuantization/n.pt\nepoch   2  loss 1.0\n"),
        _stream("stderr", "a real message on stderr\n")]
    assert [o["data"]["text/plain"] for o in out["cells"][2]["outputs"]] == [["<Figure size 10x10 with 1 Axes>"]]
    assert out["cells"][3] == nb["cells"][3]                          # nbval-checked: untouched
    assert [c["source"] for c in out["cells"]] == [c["source"] for c in nb["cells"]]
    assert out["cells"][4] == nb["cells"][4]                          # markdown is not an output
    assert clean.clean_notebook(out, spec, "3.11.9") == out           # idempotent
    assert clean.problems(out, clean.clean_notebook(out, spec, "3.11.9")) == []
    assert len(clean.problems(nb, out)) >= 4


def test_the_script_rewrites_only_what_changes(tmp_path):
    f = tmp_path / "N.ipynb"
    f.write_text(clean.dumps(dirty_notebook()), encoding="utf-8")
    assert clean.main(["--check", str(f)]) == 1
    assert clean.main([str(f)]) == 0
    first = f.read_bytes()
    assert clean.main(["--check", str(f)]) == 0
    stat = f.stat().st_mtime_ns
    assert clean.main([str(f)]) == 0
    assert f.read_bytes() == first and f.stat().st_mtime_ns == stat    # clean: not even rewritten
    assert first.endswith(b"}\n") and b'\n "metadata": {\n' in first   # nbformat's layout
