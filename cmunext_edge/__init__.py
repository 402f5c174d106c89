"""cmunext-edge: CMUNeXt from PyTorch weights to a verified, fast edge artifact."""
__version__ = "0.1.0"
