"""Compatibility alias: ``metaq_utils.regularizer`` is ``metaq_utils.nn.regularizer`` (the same module object)."""
import sys; from .nn import regularizer as _m; sys.modules[__name__] = _m  # noqa: E401,E702
