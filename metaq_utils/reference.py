"""Compatibility alias: ``metaq_utils.reference`` is ``metaq_utils.core.reference`` (the same module object)."""
import sys; from .core import reference as _m; sys.modules[__name__] = _m  # noqa: E401,E702
