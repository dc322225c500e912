"""The package version, apart from ``engram/__init__`` so any module can read it cheaply."""

__version__ = "0.1.0"
