"""Compatibility alias: ``metaq_utils.grid`` is ``metaq_utils.core.grid`` (the same module object)."""
import sys; from .core import grid as _m; sys.modules[__name__] = _m  # noqa: E401,E702
