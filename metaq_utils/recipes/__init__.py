"""Our own compression recipes (not METaQ, not a baseline), reported apart from both.

* :mod:`metaq_utils.recipes.prune_quantize` — the headline recipe (issue 15): gradual magnitude
  pruning and straight-through uniform quantization, distilled from the dense reference, coded
  with the context-adaptive codec.
"""
