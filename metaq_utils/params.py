"""Compatibility alias: ``metaq_utils.params`` is ``metaq_utils.core.params`` (the same module object)."""
import sys; from .core import params as _m; sys.modules[__name__] = _m  # noqa: E401,E702
