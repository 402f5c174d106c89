"""Datasets: image/mask discovery and splits, ground truth, image limits, the derived multi-class set."""
