"""Shared tensor operations: one implementation serves training and evaluation (stable API for plugin authors).

- :func:`resize_down_up`: the low-resolution simulation every degradation and protocol uses;
- :func:`to_network_input`: uint8 images to the normalised float input InsightFace networks expect;
- :func:`margin_logits`: the one margin formula cos(m1*theta + m2) - m3 of the built-in angular heads, with their
  fallbacks past pi ('th_mm', 'psi', 'clip', 'none'), per-row margins and rows labelled -1; a third-party head
  calls it instead of re-deriving the numerics.
"""

from .margins import margin_logits
from .preprocess import to_network_input
from .resize import resize_down_up

__all__ = ["margin_logits", "resize_down_up", "to_network_input"]
