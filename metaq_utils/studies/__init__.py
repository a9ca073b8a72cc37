"""What the analysis notebooks study, one module per question (NumPy / SciPy / pandas; no torch):

* :mod:`.dual_optimum` — the true maximum of the dual (17), certified from both sides (method code);
* :mod:`.instances` — x-subproblem instances, independent references, Kelley's trace (CuttingPlaneAlgo);
* :mod:`.breakpoints` — lower-hull vertex counts and Beta fits (ComplexityAnalysis);
* :mod:`.dual_runs` — the dual maximisers against the optimum, the thesis' Tables 1–6, warm starts
  (SubgradientBundleMethods);
* :mod:`.timing` — timing studies;
* :mod:`.plots` — figures (matplotlib, imported when drawn).

:mod:`metaq_utils.studies` itself re-exports every module's public names (the notebooks'
``from metaq_utils import studies``), and :func:`find_lenet5_checkpoint`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .breakpoints import *  # noqa: F401,F403
from .breakpoints import __all__ as _breakpoints
from .dual_optimum import *  # noqa: F401,F403
from .dual_optimum import __all__ as _dual_optimum
from .dual_runs import *  # noqa: F401,F403
from .dual_runs import __all__ as _dual_runs
from .instances import *  # noqa: F401,F403
from .instances import __all__ as _instances
from .plots import *  # noqa: F401,F403
from .plots import __all__ as _plots
from .timing import *  # noqa: F401,F403
from .timing import __all__ as _timing

__all__ = [*_instances, *_breakpoints, *_timing, *_dual_optimum, *_dual_runs, *_plots, "find_lenet5_checkpoint"]


def find_lenet5_checkpoint(folders: Sequence[str | Path]) -> tuple[Path, np.ndarray, dict] | None:
    """The first loadable LeNet-5 checkpoint under ``folders`` (searched in order, files sorted):
    (path, flat float64 weights in ``model.parameters()`` order, its grid dict or {}), or None.
    :func:`metaq_utils.nn.checkpoints.find_checkpoint` does the search (PyTorch imported here only)."""
    from metaq_utils.core.params import flatten
    from metaq_utils.nn.checkpoints import find_checkpoint

    ckpt = find_checkpoint(folders, expected_arch="lenet5")
    if ckpt is None:
        return None
    return ckpt.path, flatten(ckpt.build_model(), np.float64), dict(ckpt.grid or {})
