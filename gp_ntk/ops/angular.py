r"""Cho & Saul's angular functions :math:`J_n` of the arc-cosine kernels, with finite derivatives."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from .polynomial import horner

__all__ = ["arccos_j", "arccos_j_coefficients", "arccos_j_pair", "double_factorial"]


@lru_cache(maxsize=64)
def arccos_j_coefficients(order: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    r"""Polynomials :math:`P_n, Q_n` with :math:`J_n(\theta) = P_n(c)(\pi-\theta) + Q_n(c)\sin\theta`.

    Here :math:`c = \cos\theta`. Writing Cho & Saul's
    :math:`J_n = (-1)^n \sin^{2n+1}\theta\,(\tfrac{1}{\sin\theta}\partial_\theta)^n \tfrac{\pi-\theta}{\sin\theta}`
    with :math:`\tfrac{1}{\sin\theta}\partial_\theta = -\partial_c` and differentiating once more gives

    .. math::
        P_{n+1} = (1-c^2)P_n' + (2n+1)c P_n, \qquad Q_{n+1} = P_n + (1-c^2)Q_n' + 2nc Q_n,

    from :math:`P_0 = 1, Q_0 = 0`. Coefficients are returned lowest degree first.
    """
    if order < 0:
        raise ValueError(f"order must be a non-negative integer, got {order}")
    p: list[float] = [1.0]
    q: list[float] = [0.0]
    for n in range(order):
        p, q = _next_p(p, n), _next_q(p, q, n)
    return _trim(p), _trim(q)


def _trim(a: list[float]) -> tuple[float, ...]:
    while len(a) > 1 and a[-1] == 0.0:
        a = a[:-1]
    return tuple(a)


def _poly_derivative(a: list[float]) -> list[float]:
    return [i * a[i] for i in range(1, len(a))] or [0.0]


def _poly_add(*polys: list[float]) -> list[float]:
    out = [0.0] * max(len(p) for p in polys)
    for p in polys:
        for i, v in enumerate(p):
            out[i] += v
    return out


def _times_one_minus_c2(a: list[float]) -> list[float]:
    return _poly_add(a, [0.0, 0.0] + [-v for v in a])


def _times_c(a: list[float], factor: float) -> list[float]:
    return [0.0] + [factor * v for v in a]


def _next_p(p: list[float], n: int) -> list[float]:
    return _poly_add(_times_one_minus_c2(_poly_derivative(p)), _times_c(p, 2 * n + 1))


def _next_q(p: list[float], q: list[float], n: int) -> list[float]:
    return _poly_add(p, _times_one_minus_c2(_poly_derivative(q)), _times_c(q, 2 * n))


def _coefficients(order: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # (compiled graphs trace the polynomial construction itself: dynamo warns on lru_cache)
    if torch.compiler.is_compiling():
        return arccos_j_coefficients.__wrapped__(order)
    return arccos_j_coefficients(order)


def _angle_and_sine(c: Tensor) -> tuple[Tensor, Tensor]:
    # pi - theta = arccos(-c), and sin(theta) = sqrt((1 - c)(1 + c)): 1 - c is exact near c = 1
    # (and 1 + c near -1), so the sine has no cancellation there; c lies in [-1, 1], so the
    # product is never negative.
    return torch.arccos(-c), torch.sqrt((1.0 - c) * (1.0 + c))


def _combine(order: int, c: Tensor, angle: Tensor, sin: Tensor) -> Tensor:
    r""":math:`P_n(c)(\pi-\theta) + Q_n(c)\sin\theta` from a precomputed angle and sine."""
    p, q = _coefficients(order)
    p_c = horner(p, c)
    if not any(q):
        return angle if isinstance(p_c, float) and p_c == 1.0 else p_c * angle
    q_c = horner(q, c)
    sin = sin if isinstance(q_c, float) and q_c == 1.0 else q_c * sin
    return torch.addcmul(sin, p_c, angle) if isinstance(p_c, Tensor) else sin + p_c * angle


def _arccos_j_value(c: Tensor, order: int) -> Tensor:
    return _combine(order, c, *_angle_and_sine(c))


def _singular_slope(c: Tensor) -> Tensor:
    # d(pi - arccos c)/dc = 1/sqrt(1 - c^2) diverges at c = +-1, where the kernel has a cusp
    # (like the Laplace kernel at zero distance). There we return the symmetric subgradient 0;
    # the band is a few ulps wide, so gradients off the singular set are untouched.
    one_minus_c2 = 1.0 - c * c
    band = 16.0 * torch.finfo(c.dtype).eps
    safe = torch.where(one_minus_c2 > band, one_minus_c2, torch.ones_like(one_minus_c2))
    return torch.where(one_minus_c2 > band, torch.rsqrt(safe), torch.zeros_like(safe))


class _ArcCosJ(torch.autograd.Function):
    @staticmethod
    def forward(ctx, c: Tensor, order: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(c)
        ctx.order = order
        return _arccos_j_value(c, order)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        (c,) = ctx.saved_tensors
        n = ctx.order
        # Price's theorem: dJ_n/dc = n^2 J_{n-1}; finite on [-1, 1] for n >= 1, unlike the
        # term-by-term derivative of P_n(c) arccos(-c) + Q_n(c) sqrt(1 - c^2).
        slope = _singular_slope(c) if n == 0 else (n * n) * arccos_j(c, n - 1)
        return grad_output * slope, None


def arccos_j(c: Tensor, order: int) -> Tensor:
    r"""Cho & Saul's angular function :math:`J_n(\theta)` as a function of :math:`c = \cos\theta`.

    .. math::
        J_0 = \pi - \theta,\quad
        J_1 = \sin\theta + (\pi-\theta)\cos\theta,\quad
        J_2 = 3\sin\theta\cos\theta + (\pi-\theta)(1 + 2\cos^2\theta),

    and in general :math:`J_n = P_n(c)(\pi-\theta) + Q_n(c)\sin\theta`
    (see :func:`arccos_j_coefficients`). ``c`` must lie in :math:`[-1, 1]`.

    The derivative is :math:`\mathrm dJ_n/\mathrm dc = n^2 J_{n-1}`, which is what autograd
    uses, so gradients are finite at :math:`c = \pm 1` for :math:`n \ge 1`. For :math:`n = 0`
    the derivative :math:`1/\sqrt{1-c^2}` is used away from :math:`c=\pm1` and the symmetric
    subgradient 0 within a few ulps of it.
    """
    if not (torch.is_grad_enabled() and c.requires_grad):
        # no graph wanted (CG products, predictions): skip the autograd.Function
        return _arccos_j_value(c, order)
    if torch.compiler.is_compiling():
        # Compiled graphs are traced with plain operations; the value carries its derivative
        # n^2 J_{n-1} (or the masked 1/sqrt(1 - c^2)) as a detached factor, which gives the same
        # first derivative as the custom backward and lets the compiler fuse both passes.
        slope = _singular_slope(c) if order == 0 else (order * order) * _arccos_j_value(c, order - 1)
        return _arccos_j_value(c, order).detach() + (c - c.detach()) * slope.detach()
    return _ArcCosJ.apply(c, order)


class _ArcCosJPair(torch.autograd.Function):
    @staticmethod
    def forward(ctx, c: Tensor, order: int) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        ctx.save_for_backward(c)
        ctx.order = order
        angle, sin = _angle_and_sine(c)
        return _combine(order, c, angle, sin), _combine(order - 1, c, angle, sin)

    @staticmethod
    def backward(ctx, grad_high: Tensor | None, grad_low: Tensor | None):  # type: ignore[override]
        (c,) = ctx.saved_tensors
        n = ctx.order
        grad = None
        if grad_high is not None:
            grad = grad_high * ((n * n) * arccos_j(c, n - 1))
        if grad_low is not None:
            slope = _singular_slope(c) if n == 1 else ((n - 1) ** 2) * arccos_j(c, n - 2)
            grad = grad_low * slope if grad is None else grad + grad_low * slope
        return grad, None


def arccos_j_pair(c: Tensor, order: int) -> tuple[Tensor, Tensor]:
    r""":math:`(J_n, J_{n-1})` at :math:`c = \cos\theta` for :math:`n \ge 1`, from one ``arccos``.

    The NTK of a rectified-monomial layer needs both (the dual and the derivative dual);
    sharing the angle halves the transcendental work. Derivatives as in :func:`arccos_j`.
    """
    if order < 1:
        raise ValueError(f"order must be at least 1 for a pair (J_n, J_(n-1)), got {order}")
    if not (torch.is_grad_enabled() and c.requires_grad):
        angle, sin = _angle_and_sine(c)
        return _combine(order, c, angle, sin), _combine(order - 1, c, angle, sin)
    if torch.compiler.is_compiling():
        return arccos_j(c, order), arccos_j(c, order - 1)
    return _ArcCosJPair.apply(c, order)


def double_factorial(n: int) -> int:
    """(n)!! with (-1)!! = 0!! = 1."""
    return math.prod(range(n, 0, -2)) if n > 0 else 1
