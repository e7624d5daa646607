"""Square roots and reciprocal square roots that are 0 (with a zero gradient) at 0."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["masked_rsqrt", "masked_sqrt"]


def masked_rsqrt(var: Tensor) -> Tensor:
    """1/sqrt with 0 (and a zero gradient) at 0; NaN and inf pass through (1/sqrt(inf) = 0)."""
    nonzero = var != 0
    return torch.where(nonzero, torch.rsqrt(torch.where(nonzero, var, torch.ones_like(var))), 0.0)


def masked_sqrt(var: Tensor) -> Tensor:
    """sqrt with a zero (not infinite) gradient at 0; NaN and inf pass through."""
    nonzero = var != 0
    return torch.where(nonzero, torch.sqrt(torch.where(nonzero, var, torch.ones_like(var))), 0.0)
