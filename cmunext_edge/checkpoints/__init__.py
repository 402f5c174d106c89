"""Checkpoints: safe loading, inspection without torch, the restricted .pth reader."""
