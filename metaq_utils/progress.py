"""Compatibility alias: ``metaq_utils.progress`` is ``metaq_utils.store.progress`` (the same module object)."""
import sys; from .store import progress as _m; sys.modules[__name__] = _m  # noqa: E401,E702
