"""Products that keep a kernel matrix exactly symmetric, and in-place products on temporaries."""

from __future__ import annotations

import torch
from torch import Tensor

from .shapes import broadcast_shape

__all__ = ["grad_free", "mul_temporary", "outer", "symmetrize"]


def outer(left: Tensor, right: Tensor) -> Tensor:
    """``left * right`` for ``(..., n, 1)`` and ``(..., 1, m)`` factors.

    Multiplying a matrix by this product (rather than by each factor in turn) keeps
    ``k(X, X)`` exactly symmetric: ``l_i r_j`` and ``l_j r_i`` round alike, ``(a l_i) r_j`` and
    ``(a l_j) r_i`` need not.
    """
    return left * right


def grad_free(*tensors: Tensor) -> bool:
    """Whether intermediate results may be overwritten: no autograd graph will need them."""
    return not torch.is_grad_enabled() or not any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


def mul_temporary(a: Tensor, b: Tensor | float) -> Tensor:
    """``a * b``, in place on ``a`` (a temporary of the caller's) where autograd allows."""
    if grad_free(a, b) and not torch.compiler.is_compiling() and _broadcasts_into(b, a):
        return a.mul_(b)
    return a * b


def _broadcasts_into(b: Tensor | float, a: Tensor) -> bool:
    return not isinstance(b, Tensor) or broadcast_shape(a.shape, b.shape) == a.shape


def symmetrize(a: Tensor) -> Tensor:
    return 0.5 * (a + a.transpose(-1, -2))
