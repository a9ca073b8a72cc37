"""The maths of METaQ (NumPy, SciPy, numba; no torch), on which every other layer builds:

* :mod:`.grid` — the bucket grid ``(w0, r, C)``, one value (:class:`~.grid.Grid`), the thesis grid;
* :mod:`.params` — the flat parameter vector ``w`` of spec §1 (the one flattener);
* :mod:`.subproblem` — the x-subproblem (30)–(33): lower hulls and its solvers;
* :mod:`.dual` — the Lagrangian dual φ_w (17) and its maximisers (DSS, FISTA, PBM, bundle);
* :mod:`._kernels` — the compiled hot loops of :mod:`.dual` (numba), tested against NumPy;
* :mod:`.reference` — the dual solve under the reference implementation's rules.

The torch side of the method — the gradient hook that adds the entropy term — is
:mod:`metaq_utils.nn.regularizer`, one layer up.
"""
