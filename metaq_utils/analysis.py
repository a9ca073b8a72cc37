"""The analysis notebooks' import name, kept so that ``from metaq_utils import analysis`` and
``analysis.<name>`` go on working: a re-export of :mod:`metaq_utils.studies`, where the code lives.

* :mod:`metaq_utils.studies.dual_optimum` — the certified dual optimum (method code);
* :mod:`metaq_utils.studies.instances` — x-subproblem instances, references, Kelley trace;
* :mod:`metaq_utils.studies.breakpoints` — breakpoint counts and Beta fits;
* :mod:`metaq_utils.studies.dual_runs` — the dual maximisers against the optimum, thesis tables;
* :mod:`metaq_utils.studies.timing` — timing studies;
* :mod:`metaq_utils.studies.plots` — the convergence figure;
* :func:`metaq_utils.nn.checkpoints.find_checkpoint` — the checkpoint finder (torch side), behind
  :func:`find_lenet5_checkpoint` here.

New code should import from those modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from metaq_utils.studies.breakpoints import *  # noqa: F401,F403
from metaq_utils.studies.breakpoints import __all__ as _breakpoints
from metaq_utils.studies.dual_optimum import *  # noqa: F401,F403
from metaq_utils.studies.dual_optimum import __all__ as _dual_optimum
from metaq_utils.studies.dual_runs import *  # noqa: F401,F403
from metaq_utils.studies.dual_runs import __all__ as _dual_runs
from metaq_utils.studies.instances import *  # noqa: F401,F403
from metaq_utils.studies.instances import __all__ as _instances
from metaq_utils.studies.plots import *  # noqa: F401,F403
from metaq_utils.studies.plots import __all__ as _plots
from metaq_utils.studies.timing import *  # noqa: F401,F403
from metaq_utils.studies.timing import __all__ as _timing

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
