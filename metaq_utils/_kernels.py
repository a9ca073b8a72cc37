"""Compatibility alias: ``metaq_utils._kernels`` is ``metaq_utils.core._kernels`` (the same module object)."""
import sys; from .core import _kernels as _m; sys.modules[__name__] = _m  # noqa: E401,E702
