"""Derm Portal ML engine: granularity-transfer hierarchical skin-lesion classification.

Pure PyTorch; never imports Django. The public API and the command line: README.md, "ML engine".
"""

__version__ = "0.1.0"
