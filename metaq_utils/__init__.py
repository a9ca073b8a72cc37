"""METaQ workspace utilities: data, networks, training, the METaQ optimisation core,
quantisation, entropy coding and the compressed model file format."""

__version__ = "0.1.0"
