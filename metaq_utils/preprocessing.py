"""Compatibility alias: ``metaq_utils.preprocessing`` is ``metaq_utils.coding.preprocessing`` (the same module object)."""
import sys; from .coding import preprocessing as _m; sys.modules[__name__] = _m  # noqa: E401,E702
