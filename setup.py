"""Package discovery (everything else is in pyproject.toml). `export/` and `models/` are installed
as cmunext_edge.export and cmunext_edge.models (pyproject's package-dir), which setuptools'
`packages.find` cannot name, so every folder with an __init__.py is found here instead of listed."""
from setuptools import find_packages, setup

PACKAGES = [*find_packages(include=["cmunext_edge", "cmunext_edge.*"]), "cmunext_edge.export",
            *(f"cmunext_edge.export.{p}" for p in find_packages("export")), "cmunext_edge.models"]

setup(packages=PACKAGES)
