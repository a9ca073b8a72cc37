"""Compatibility alias: ``metaq_utils.ptq`` is ``metaq_utils.nn.ptq`` (the same module object)."""
import sys; from .nn import ptq as _m; sys.modules[__name__] = _m  # noqa: E401,E702
