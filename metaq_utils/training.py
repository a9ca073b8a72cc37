"""Compatibility alias: ``metaq_utils.training`` is ``metaq_utils.nn.training`` (the same module object)."""
import sys; from .nn import training as _m; sys.modules[__name__] = _m  # noqa: E401,E702
