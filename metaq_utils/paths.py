"""Compatibility alias: ``metaq_utils.paths`` is ``metaq_utils.store.paths`` (the same module object)."""
import sys; from .store import paths as _m; sys.modules[__name__] = _m  # noqa: E401,E702
