"""Quantization to a grid, and what it costs in bits (NumPy; no torch):

* :mod:`.quantization` — bucket indices, bucket centres, the zero-order entropy of the result;
* :mod:`.quant_range` — the one rule for the range a trained model is quantized on.

The C_Q sweep on a trained network (it evaluates the network) is :mod:`metaq_utils.nn.ptq`.
"""
