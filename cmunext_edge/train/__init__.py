"""Training: the official recipe and a run's state (classes, resume, history)."""
