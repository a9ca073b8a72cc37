"""Compatibility alias: ``metaq_utils.networks`` is ``metaq_utils.nn.networks`` (the same module object)."""
import sys; from .nn import networks as _m; sys.modules[__name__] = _m  # noqa: E401,E702
