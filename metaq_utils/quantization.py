"""Compatibility alias: ``metaq_utils.quantization`` is ``metaq_utils.quant.quantization`` (the same module object)."""
import sys; from .quant import quantization as _m; sys.modules[__name__] = _m  # noqa: E401,E702
