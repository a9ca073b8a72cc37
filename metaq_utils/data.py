"""Compatibility alias: ``metaq_utils.data`` is ``metaq_utils.nn.data`` (the same module object)."""
import sys; from .nn import data as _m; sys.modules[__name__] = _m  # noqa: E401,E702
