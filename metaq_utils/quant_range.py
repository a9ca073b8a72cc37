"""Compatibility alias: ``metaq_utils.quant_range`` is ``metaq_utils.quant.quant_range`` (the same module object)."""
import sys; from .quant import quant_range as _m; sys.modules[__name__] = _m  # noqa: E401,E702
