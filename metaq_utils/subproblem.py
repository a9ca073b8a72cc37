"""Compatibility alias: ``metaq_utils.subproblem`` is ``metaq_utils.core.subproblem`` (the same module object)."""
import sys; from .core import subproblem as _m; sys.modules[__name__] = _m  # noqa: E401,E702
