"""Compatibility alias: ``metaq_utils.dual`` is ``metaq_utils.core.dual`` (the same module object)."""
import sys; from .core import dual as _m; sys.modules[__name__] = _m  # noqa: E401,E702
