"""What the analysis notebooks study, one module per question (NumPy / SciPy / pandas; no torch):

* :mod:`.dual_optimum` — the true maximum of the dual (17), certified from both sides (method code);
* :mod:`.instances` — x-subproblem instances, independent references, Kelley's trace (CuttingPlaneAlgo);
* :mod:`.breakpoints` — lower-hull vertex counts and Beta fits (ComplexityAnalysis);
* :mod:`.dual_runs` — the dual maximisers against the optimum, the thesis' Tables 1–6, warm starts
  (SubgradientBundleMethods);
* :mod:`.timing` — timing studies;
* :mod:`.plots` — figures (matplotlib, imported when drawn).

:mod:`metaq_utils.analysis` re-exports all of it under the notebooks' old import name.
"""
