"""Compatibility alias: ``metaq_utils.checkpoints`` is ``metaq_utils.nn.checkpoints`` (the same module object)."""
import sys; from .nn import checkpoints as _m; sys.modules[__name__] = _m  # noqa: E401,E702
