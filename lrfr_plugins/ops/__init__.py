"""Shared tensor operations: one implementation serves training and evaluation."""

from .preprocess import to_network_input
from .resize import resize_down_up

__all__ = ["resize_down_up", "to_network_input"]
