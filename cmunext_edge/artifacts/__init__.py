"""Exported artifacts: metadata and self-test, description from files, verified load."""
