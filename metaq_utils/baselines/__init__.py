"""Baseline compression methods, measured on our networks with our compressed file format.

* :mod:`metaq_utils.baselines.deep_compression` — Deep Compression (Han et al. 2016): iterative
  magnitude pruning with retraining, per-layer k-means weight sharing with centroid fine-tuning,
  sparse entropy-coded storage.
"""
from .deep_compression import DeepCompression, DeepCompressionConfig, DeepCompressionResult

__all__ = ["DeepCompression", "DeepCompressionConfig", "DeepCompressionResult"]
