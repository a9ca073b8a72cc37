"""Compatibility alias: ``metaq_utils.thesis`` is ``metaq_utils.studies.thesis`` (the same module object)."""
import sys; from .studies import thesis as _m; sys.modules[__name__] = _m  # noqa: E401,E702
