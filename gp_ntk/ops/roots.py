"""Square roots and reciprocal square roots that are 0 (with a zero gradient) at 0."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["masked_rsqrt", "masked_sqrt"]


def _no_zero_on_cpu(var: Tensor) -> bool:
    """Whether the plain root applies: no entry is 0, tested on the CPU only.

    Away from 0 the masked roots equal the plain ones, values and gradients (NaN, inf and
    negative entries included), and the plain ones cost one operation instead of four (their
    backward passes one instead of three), which for the O(n) statistics of a small block is
    most of their cost. The test is one reduction and a sync, which a GPU would wait for:
    there the masked form runs as it is.
    """
    return var.device.type == "cpu" and not torch.compiler.is_compiling() and bool(var.detach().all())


def masked_rsqrt(var: Tensor) -> Tensor:
    """1/sqrt with 0 (and a zero gradient) at 0; NaN and inf pass through (1/sqrt(inf) = 0)."""
    if _no_zero_on_cpu(var):
        return torch.rsqrt(var)
    nonzero = var != 0
    return torch.where(nonzero, torch.rsqrt(torch.where(nonzero, var, torch.ones_like(var))), 0.0)


def masked_sqrt(var: Tensor) -> Tensor:
    """sqrt with a zero (not infinite) gradient at 0; NaN and inf pass through."""
    if _no_zero_on_cpu(var):
        return torch.sqrt(var)
    nonzero = var != 0
    return torch.where(nonzero, torch.sqrt(torch.where(nonzero, var, torch.ones_like(var))), 0.0)
