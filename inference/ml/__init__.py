"""Derm Portal ML engine: granularity-transfer hierarchical skin-lesion classification.

Pure PyTorch; never imports Django. See ``inference/ml/README.md`` for the public API.
"""
__version__ = "0.1.0"
