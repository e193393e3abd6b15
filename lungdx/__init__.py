"""lungdx: a reproducible pipeline that recognises lung disease on chest X-rays."""

__version__ = "0.1.0"
