"""Compatibility alias: ``metaq_utils.atomic`` is ``metaq_utils.store.atomic`` (the same module object)."""
import sys; from .store import atomic as _m; sys.modules[__name__] = _m  # noqa: E401,E702
