"""The notebook regression check has teeth: nbval passes on a committed notebook's checked cells
and fails as soon as a checked output differs from the stored one."""
import copy
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "LoadAndCompression.ipynb"


def _prefix_through_first_checked_cell(nb):
    """The notebook up to and including its first NBVAL_CHECK_OUTPUT cell (fast to run)."""
    out = copy.deepcopy(nb)
    cells = []
    for cell in out.cells:
        cells.append(cell)
        if cell.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in cell.source:
            break
    out.cells = cells
    return out


def _nbval(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--nbval-current-env", str(path)], capture_output=True, text=True, timeout=600,
                          cwd=path.parent)


@pytest.mark.slow
def test_nbval_detects_a_changed_result(tmp_path):
    nb = _prefix_through_first_checked_cell(nbformat.read(NOTEBOOK, as_version=4))
    checked = nb.cells[-1]
    assert "NBVAL_CHECK_OUTPUT" in checked.source and checked.outputs, "the committed notebook must carry outputs"
    # run it where the notebook lives, so its relative paths (../data, ../BestModels...) resolve
    good = NOTEBOOK.parent / f"_teeth_{tmp_path.name}_good.ipynb"
    bad = NOTEBOOK.parent / f"_teeth_{tmp_path.name}_bad.ipynb"
    try:
        nbformat.write(nb, good)
        res = _nbval(good)
        assert res.returncode == 0, res.stdout[-3000:]

        text = "".join(o.get("text", "") for o in checked.outputs)
        assert "unquantized validation accuracy " in text
        perturbed = copy.deepcopy(nb)
        for o in perturbed.cells[-1].outputs:
            if "text" in o:
                # a different stored accuracy: what a silently broken change would produce
                o["text"] = o["text"].replace("unquantized validation accuracy ", "unquantized validation accuracy 1")
        nbformat.write(perturbed, bad)
        res = _nbval(bad)
        assert res.returncode != 0
        assert "mismatch" in res.stdout.lower() or "failed" in res.stdout.lower()
    finally:
        good.unlink(missing_ok=True)
        bad.unlink(missing_ok=True)
