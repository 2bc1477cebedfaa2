"""The package version, in a module of its own so that any module can read it without importing the
``sweeper`` package's lazy API (``sweeper/__init__.py`` re-exports it)."""

__version__ = "0.2.0"
