"""fairbench: a benchmark harness for the fairness of CLIP-like medical vision-language models."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
