"""Polynomials evaluated by Horner's rule."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["horner"]


def horner(coefficients: Sequence[float], c: Tensor) -> Tensor | float:
    """Horner's rule; a constant stays a Python float and a bare ``c`` is not copied."""
    if len(coefficients) == 1:
        return coefficients[0]
    if tuple(coefficients) == (0.0, 1.0):
        return c
    out = coefficients[-1] * c + coefficients[-2]
    for a in reversed(coefficients[:-2]):
        out = out * c + a
    return out
