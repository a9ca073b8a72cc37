"""Compatibility alias: ``metaq_utils.fileformat`` is ``metaq_utils.coding.fileformat`` (the same module object)."""
import sys; from .coding import fileformat as _m; sys.modules[__name__] = _m  # noqa: E401,E702
