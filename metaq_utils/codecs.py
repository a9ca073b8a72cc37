"""Compatibility alias: ``metaq_utils.codecs`` is ``metaq_utils.coding.codecs`` (the same module object)."""
import sys; from .coding import codecs as _m; sys.modules[__name__] = _m  # noqa: E401,E702
