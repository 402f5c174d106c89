"""Prediction outputs: the batch job, per-image scores, overlays, video."""
