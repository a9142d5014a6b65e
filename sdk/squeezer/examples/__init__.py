"""Bundled examples: models and data that ship inside the package (nothing is downloaded)."""
