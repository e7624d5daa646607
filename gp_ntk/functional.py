r"""Pure-tensor core: the angular functions, input covariances and the layer recursion.

Everything here works on covariance tensors that broadcast against each other:

* full mode: ``var1`` is ``(..., n, 1)``, ``cov`` is ``(..., n, m)``, ``var2`` is ``(..., 1, m)``;
* diagonal mode: all three are ``(..., n)``.

No function here knows about a particular activation: each layer asks the
:class:`~gp_ntk.activations.Activation` for its dual kernel
:math:`\mathbb E[\phi(u)\phi(v)]` and derivative dual :math:`\mathbb E[\phi'(u)\phi'(v)]`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .activations import Activation

__all__ = [
    "arccos_j",
    "arccos_j_coefficients",
    "arccos_j_pair",
    "block_recursion",
    "correlation",
    "linear_covariances",
    "layer_recursion",
    "needs_identical_points",
    "point_statistics",
]


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


def _polynomial(coefficients: Sequence[float], c: Tensor) -> Tensor | float:
    """Horner's rule; a constant stays a Python float and a bare ``c`` is not copied."""
    if len(coefficients) == 1:
        return coefficients[0]
    if tuple(coefficients) == (0.0, 1.0):
        return c
    out = coefficients[-1] * c + coefficients[-2]
    for a in reversed(coefficients[:-2]):
        out = out * c + a
    return out


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
    p_c = _polynomial(p, c)
    if not any(q):
        return angle if isinstance(p_c, float) and p_c == 1.0 else p_c * angle
    q_c = _polynomial(q, c)
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


# Each side's reciprocal standard deviation is scaled by 1 + 2 eps, the correlation by about
# 1 + 4 eps: v * rsqrt(v)**2 is within 2 eps of 1 (measured over 1e6 values in float32 and
# float64), so equal points come out at exactly 1, while a band of 4 eps moves deep float32
# kernels (depth 50) by 3e-4 relative, well inside their rounding at that depth.
_SNAP_ULPS = 2.0


def correlation(
    var1: Tensor, cov: Tensor, var2: Tensor, symmetric: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    r"""The correlation :math:`c = \Sigma_{xy}/\sqrt{\Sigma_{xx}\Sigma_{yy}}` clamped to [-1, 1], and the
    standard deviations :math:`\sqrt{\Sigma_{xx}}`, :math:`\sqrt{\Sigma_{yy}}` (shaped like ``var1``, ``var2``).

    Correlations within a few ulps of :math:`\pm 1` (rounding, which ``arccos`` would turn
    into an angle of :math:`\sqrt{2\,\mathrm{ulp}}`) are taken as exactly :math:`\pm 1`.
    ``symmetric`` says that ``cov`` is a matrix :math:`k(X, X)` whose diagonal is ``var1`` and
    ``var2``: its diagonal correlations are then set to exactly 1 whatever the rounding.

    A zero variance comes from a zero-norm input without bias, where the angle is undefined.
    Two such inputs are the same point, so their correlation is 1; between a zero and a
    non-zero input it is set to 0 (the average over directions). Gradients through the zero
    branches are zero, so nothing turns NaN; an overflowed (inf/NaN) variance propagates to
    the output, where the kernels report it, instead of passing for a zero-norm input.
    """
    # One multiplication by the reciprocal standard deviations of both sides rather than a
    # square root of the n x m product: the transcendental n x m work of a layer is its arccos.
    # The factor root_snap**2 = 1 + 4 eps snaps |c| within rounding of 1 to exactly 1 in the
    # clamp below: such a c cannot be told from +-1, and an ulp below 1 would become an angle
    # of sqrt(2 ulp) at the arccos. Equal points cross-evaluated (v * rsqrt(v)**2 != 1) thus
    # get the same value as on the diagonal. Elsewhere it moves c by less than its rounding.
    # (Both sides take the square root of the factor so that the product stays symmetric.)
    root_snap = 1.0 + _SNAP_ULPS * torch.finfo(cov.dtype).eps
    c = _mul(outer(_masked_rsqrt(var1) * root_snap, _masked_rsqrt(var2) * root_snap), cov)
    if _has_zero(var1) and _has_zero(var2):
        c = torch.where((var1 == 0) & (var2 == 0), torch.ones_like(c), c)
    # Rounding can push |c| a few ulps past 1 near (anti-)parallel inputs; the true derivative of
    # c there is 0, which is also what clamp passes on for values outside the range.
    c = _clamp_unit(c)
    if symmetric:
        c = _unit_diagonal(c)
    return c, _masked_sqrt(var1), _masked_sqrt(var2)


def outer(left: Tensor, right: Tensor) -> Tensor:
    """``left * right`` for ``(..., n, 1)`` and ``(..., 1, m)`` factors.

    Multiplying a matrix by this product (rather than by each factor in turn) keeps
    ``k(X, X)`` exactly symmetric: ``l_i r_j`` and ``l_j r_i`` round alike, ``(a l_i) r_j`` and
    ``(a l_j) r_i`` need not.
    """
    return left * right


def _grad_free(*tensors: Tensor) -> bool:
    """Whether intermediate results may be overwritten: no autograd graph will need them."""
    return not torch.is_grad_enabled() or not any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


def _mul(a: Tensor, b: Tensor | float) -> Tensor:
    """``a * b``, in place on ``a`` (a temporary of the caller's) where autograd allows."""
    if _grad_free(a, b) and not torch.compiler.is_compiling() and _broadcasts_into(b, a):
        return a.mul_(b)
    return a * b


def _broadcasts_into(b: Tensor | float, a: Tensor) -> bool:
    return not isinstance(b, Tensor) or torch.broadcast_shapes(a.shape, b.shape) == a.shape


def _clamp_unit(c: Tensor) -> Tensor:
    if _grad_free(c) and not torch.compiler.is_compiling():
        return c.clamp_(-1.0, 1.0)
    return torch.clamp(c, -1.0, 1.0)


def _unit_diagonal(c: Tensor) -> Tensor:
    if _grad_free(c) and not torch.compiler.is_compiling():
        c.diagonal(dim1=-2, dim2=-1).fill_(1.0)
        return c
    eye = torch.eye(c.shape[-1], dtype=torch.bool, device=c.device)
    return torch.where(eye, torch.ones_like(c), c)


def _has_zero(var: Tensor) -> bool:
    # a compiled graph takes the branch-free masked path rather than a data-dependent branch
    return torch.compiler.is_compiling() or bool((var == 0).any())


def _masked_rsqrt(var: Tensor) -> Tensor:
    """1/sqrt with 0 (and a zero gradient) at 0; NaN and inf pass through (1/sqrt(inf) = 0)."""
    nonzero = var != 0
    return torch.where(nonzero, torch.rsqrt(torch.where(nonzero, var, torch.ones_like(var))), 0.0)


def _masked_sqrt(var: Tensor) -> Tensor:
    """sqrt with a zero (not infinite) gradient at 0; NaN and inf pass through."""
    nonzero = var != 0
    return torch.where(nonzero, torch.sqrt(torch.where(nonzero, var, torch.ones_like(var))), 0.0)


def gram_determinant(var1: Tensor, cov: Tensor, var2: Tensor) -> Tensor:
    r""":math:`\Sigma_{xx}\Sigma_{yy} - \Sigma_{xy}^2 \ge 0`, factored so it neither overflows nor goes negative."""
    root = _masked_sqrt(var1) * _masked_sqrt(var2)
    return torch.clamp((root - cov) * (root + cov), min=0.0)


def linear_covariances(
    x1: Tensor,
    x2: Tensor,
    weight_variance: Tensor,
    bias_variance: Tensor | None,
    diag: bool = False,
    scale: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Covariances of the first affine layer, :math:`\Sigma(x, y) = b + \text{scale}\cdot\sum_i w_i x_i y_i`.

    Args:
        x1: ``(..., n, d)`` inputs.
        x2: ``(..., m, d)`` inputs (``m == n`` when ``diag``).
        weight_variance: broadcastable to ``(..., 1, d)``: one variance or one per dimension.
        bias_variance: broadcastable to ``(..., 1, 1)``, or ``None`` for no bias.
        diag: return only :math:`\Sigma(x_{1i}, x_{2i})`.
        scale: ``1/d`` for the neural-tangents convention, ``1`` for Cho & Saul / Williams.

    Returns:
        ``(var1, cov, var2)``: ``(..., n, 1), (..., n, m), (..., 1, m)`` or, with ``diag``,
        three ``(..., n)`` tensors. When ``x1 is x2`` in diagonal mode the same tensor is
        returned three times, which later layers use to skip repeated work.
    """
    w = weight_variance * scale
    x1w = x1 * w
    if diag:
        var1 = (x1w * x1).sum(-1)
        if x1 is x2:
            var2 = cov = var1
        else:
            var2 = (x2 * w * x2).sum(-1)
            cov = (x1w * x2).sum(-1)
        if bias_variance is not None:
            b = bias_variance.squeeze(-1)
            if cov is var1:
                var1 = var2 = cov = var1 + b
            else:
                var1, cov, var2 = var1 + b, cov + b, var2 + b
        return var1, cov, var2
    cov = x1w @ x2.transpose(-1, -2)
    if bias_variance is not None:
        cov = cov + bias_variance
    if x1 is x2:
        # BLAS does not promise a bitwise-symmetric x x^T; near-duplicate rows would turn that
        # last-bit asymmetry into a visible one through arccos. Every later map is elementwise
        # and commutes, so symmetrising once here makes k(X, X) exactly symmetric.
        return _diagonal_variances(_symmetrize(cov))
    var1 = (x1w * x1).sum(-1).unsqueeze(-1)
    var2 = (x2 * w * x2).sum(-1).unsqueeze(-2)
    if bias_variance is not None:
        var1 = var1 + bias_variance
        var2 = var2 + bias_variance
    return var1, cov, var2


def _diagonal_variances(cov: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    # For k(X, X) the variances are read off the matrix's own diagonal, so that
    # c_ii = cov_ii / sqrt(cov_ii^2) is exactly 1: arccos amplifies an error e in c near 1
    # to sqrt(2e) in the angle (3e-4 in float32), which would make diag=True disagree with
    # the diagonal of the full matrix and spoil its symmetry.
    d = cov.diagonal(dim1=-2, dim2=-1)
    return d.unsqueeze(-1), cov, d.unsqueeze(-2)


def layer_recursion(
    var1: Tensor,
    cov: Tensor,
    var2: Tensor,
    activation: Activation,
    weight_variances: Sequence[Tensor],
    bias_variances: Sequence[Tensor | None],
    compute_ntk: bool,
    symmetric: bool = False,
    standard_ntk: tuple[Tensor, Sequence[float]] | None = None,
    diag: bool = False,
) -> tuple[Tensor, Tensor | None]:
    r"""Propagate covariances through ``len(weight_variances)`` (activation, affine) layers.

    With :math:`q = \mathbb E[\phi(u)\phi(v)]` and :math:`\dot q = \mathbb E[\phi'(u)\phi'(v)]`
    for :math:`(u, v) \sim \mathcal N(0, [[\Sigma_{xx}, \Sigma_{xy}], [\Sigma_{xy}, \Sigma_{yy}]])`,
    each layer maps

    .. math::
        \Sigma' = \sigma_w^2\, q + \sigma_b^2, \qquad \Theta' = \Sigma' + \sigma_w^2\,\dot q\,\Theta,

    starting from :math:`\Theta = \Sigma` (NTK parameterization). The duals come from the
    activation's ``correlation_duals`` (from the correlation and the standard deviations,
    computed once per layer) where it has one, else from its ``duals``. The variances
    :math:`\Sigma_{xx}, \Sigma_{yy}` are propagated with the activation's O(n) ``variance``
    (:func:`point_statistics`), so no diagonal is ever taken from an n x m matrix; the n x m
    work is :func:`block_recursion`'s.

    With ``symmetric`` (a full matrix k(X, X), ``var1`` and ``var2`` its diagonal) the
    diagonal correlations are set to exactly 1 at every layer.

    ``standard_ntk = (theta_1, widths)`` switches the NTK to the standard parameterization,
    where a weight's gradient is not scaled by :math:`\sigma_w/\sqrt{n}`: the caller passes
    :math:`\Theta^{(1)} = x^\top y\,[+1]` and the hidden widths :math:`n_l`, and each layer adds
    :math:`n_l\,q\,[+1]` (the bracket when there are biases) instead of :math:`\Sigma'`.

    ``diag`` (implied when ``var1``, ``cov`` and ``var2`` are one tensor): all three are
    ``(..., n)``, the pairs' own covariances, propagated elementwise.

    Returns:
        ``(nngp, ntk)``; ``ntk`` is ``None`` unless ``compute_ntk``.
    """
    if not (diag or (var1 is cov and var2 is cov)):
        # the statistics are per point: the variances lose the matrix's column dimension
        weights = [_vector_shaped(w) for w in weight_variances]
        biases = [_vector_shaped(b) for b in bias_variances]
        stats1 = point_statistics(var1.squeeze(-1), activation, weights, biases)
        stats2 = stats1 if symmetric else point_statistics(var2.squeeze(-2), activation, weights, biases)
        return block_recursion(
            cov,
            stats1,
            stats2,
            activation,
            weight_variances,
            bias_variances,
            compute_ntk,
            symmetric,
            None,
            standard_ntk,
        )
    # elementwise: when the pairs are points with themselves every quantity is a variance and
    # the activation's O(n) closed forms apply
    same = var1 is cov and var2 is cov
    # pairs of identical points among different ones take the variance map (see block_recursion)
    identical = None if same or not needs_identical_points(activation) else _identical_pairs(var1, cov, var2)
    if identical is not None:
        # (means of the two sides' equal values: each side gets half the variance map's
        # gradient, the partial derivative of k(x, y) at x = y)
        cov = torch.where(identical, 0.5 * (var1 + var2), cov)
    ntk = None
    if compute_ntk:
        ntk = cov if standard_ntk is None else standard_ntk[0]
    for layer, (w, b) in enumerate(zip(weight_variances, bias_variances)):
        if same:
            q = activation.variance(cov)
            q_dot = activation.derivative_variance(cov) if compute_ntk else None
        else:
            q, q_dot = activation.duals(var1, cov, var2, derivative=compute_ntk)
            point_q1, point_q2 = activation.variance(var1), activation.variance(var2)
            if identical is not None:
                q = torch.where(identical, 0.5 * (point_q1 + point_q2), q)
                if compute_ntk:
                    point_dot = activation.derivative_variance(var1) + activation.derivative_variance(var2)
                    q_dot = torch.where(identical, 0.5 * point_dot, q_dot)
            var1 = _affine(point_q1, w, b)
            var2 = _affine(point_q2, w, b)
        cov_next = _affine(q, w, b)
        if compute_ntk:
            ntk = torch.addcmul(_tangent(cov_next, q, b, layer, standard_ntk), w * q_dot, ntk)
        cov = cov_next
        if same:
            var1 = var2 = cov
    return cov, ntk


def point_statistics(
    var: Tensor,
    activation: Activation,
    weight_variances: Sequence[Tensor | float],
    bias_variances: Sequence[Tensor | None],
) -> Tensor:
    r"""Per-point statistics of every layer's pre-activations, computed once in O(n) per layer.

    Args:
        var: ``(..., n)`` first-layer variances :math:`\Sigma^{(1)}(x, x)`.
        activation, weight_variances, bias_variances: as for :func:`layer_recursion`, the
            variances shaped to broadcast against ``(..., n)``.

    Returns:
        ``(..., n, 3L)``: for layer :math:`l` (the input of its activation) columns ``3l, 3l+1,
        3l+2`` hold the variance :math:`v_l`, :math:`\sqrt{v_l}` and :math:`1/\sqrt{v_l}` (0 where
        :math:`v_l = 0`, scaled by the snapping factor of :func:`correlation`).

    :func:`block_recursion` takes these for the rows and the columns of a block, so that a
    block of a large matrix costs only its own n x m work.
    """
    root_snap = 1.0 + _SNAP_ULPS * torch.finfo(var.dtype).eps
    columns = []
    for layer in range(len(weight_variances)):
        if layer > 0:
            var = _affine(activation.variance(var), weight_variances[layer - 1], bias_variances[layer - 1])
        columns += [var, _masked_sqrt(var), _masked_rsqrt(var) * root_snap]
    # Stored column-major (each statistic contiguous over the points): a fused block loop runs
    # over the columns of the block and reads one statistic of every column per layer, which is
    # then a contiguous, vectorisable load instead of a gather with a stride of 3L entries
    # (measured at depth 20, N = 8000: compiled evaluation 8.6 s row-major, see docs/benchmarks.md).
    return torch.stack(torch.broadcast_tensors(*columns), dim=-2).mT


def zero_variances(stats: Tensor) -> tuple[bool, ...]:
    """Per layer, whether any point of ``stats`` (from :func:`point_statistics`) has variance 0."""
    return tuple(bool(flag) for flag in (stats[..., 0::3] == 0).reshape(-1, stats.shape[-1] // 3).any(0))


def block_recursion(
    cov: Tensor,
    stats1: Tensor,
    stats2: Tensor,
    activation: Activation,
    weight_variances: Sequence[Tensor | float],
    bias_variances: Sequence[Tensor | None],
    compute_ntk: bool,
    symmetric: bool = False,
    zeros: tuple[tuple[bool, ...], tuple[bool, ...]] | None = None,
    standard_ntk: tuple[Tensor, Sequence[float]] | None = None,
    distinct: bool = False,
) -> tuple[Tensor, Tensor | None]:
    r"""The recursion of :func:`layer_recursion` on an n x m block, from per-point statistics.

    Args:
        cov: ``(..., n, m)`` first-layer covariances of the block.
        stats1, stats2: ``(..., n, 3L)`` and ``(..., m, 3L)`` from :func:`point_statistics` for
            the block's rows and columns; with ``symmetric`` the block is :math:`k(X, X)` and
            its diagonal correlations are set to exactly 1.
        zeros: per side and layer, whether any variance is 0 (``zero_variances``); ``None``
            tests here. Passing them keeps a loop over blocks free of device synchronisation.
        weight_variances, bias_variances: shaped to broadcast against ``(..., n, m)``.
        distinct: known that no point of one side has the first-layer variance of a point of
            the other (so that no pair can be one point twice, see :func:`needs_identical_points`).

    Only n x m work happens here: the variances of every layer come from the statistics.
    """
    if zeros is None:
        zeros = (zero_variances(stats1), zero_variances(stats2))
    identical = None
    if needs_identical_points(activation):
        identical = _IdenticalPoints(cov, stats1, stats2, symmetric, distinct)
        if identical.active and (compute_ntk or identical.mask is not None):
            # (the NTK starts from these first-layer covariances; the caller's tensor is kept)
            cov = identical.substitute(cov, stats1[..., 0], stats2[..., 0], inplace=False)
    ntk = None
    if compute_ntk:
        ntk = cov if standard_ntk is None else standard_ntk[0]
    correlation_duals = getattr(activation, "correlation_duals", None)
    for layer, (w, b) in enumerate(zip(weight_variances, bias_variances)):
        var1, std1, rstd1 = (stats1[..., 3 * layer + k].unsqueeze(-1) for k in range(3))
        var2, std2, rstd2 = (stats2[..., 3 * layer + k].unsqueeze(-2) for k in range(3))
        if correlation_duals is None:
            q, q_dot = activation.duals(var1, cov, var2, derivative=compute_ntk)
        else:
            # activations whose duals depend on the correlation get it from here, where the
            # diagonal of a symmetric matrix is known to be exactly 1
            c = _mul(outer(rstd1, rstd2), cov)
            if zeros[0][layer] and zeros[1][layer]:
                c = torch.where((var1 == 0) & (var2 == 0), torch.ones_like(c), c)
            c = _clamp_unit(c)
            if symmetric:
                c = _unit_diagonal(c)
            q, q_dot = correlation_duals(c, std1, std2, derivative=compute_ntk)
        if identical is not None and identical.active:
            point1, point2 = var1.squeeze(-1), var2.squeeze(-2)
            # (a symmetric block without duplicates needs only its diagonal: one side's values)
            pairs = identical.mask is not None
            q = identical.substitute(
                q, activation.variance(point1), activation.variance(point2) if pairs else None
            )
            if compute_ntk:
                q_dot = identical.substitute(
                    q_dot,
                    activation.derivative_variance(point1),
                    activation.derivative_variance(point2) if pairs else None,
                )
        cov_next = _affine(q, w, b)
        if compute_ntk:
            ntk = torch.addcmul(_tangent(cov_next, q, b, layer, standard_ntk), w * q_dot, ntk)
        cov = cov_next
    return cov, ntk


def needs_identical_points(activation: Activation) -> bool:
    r"""Whether pairs of identical points must be evaluated by the activation's variance map.

    In the chaotic regime the correlation map's slope at :math:`c = 1` exceeds 1, so an error
    of one ulp in the correlation of a point with itself (or with a copy of itself) grows
    exponentially with depth: the diagonal of a deep erf, sine or GELU kernel matrix would
    drift away from its variance and the matrix would stop being positive semi-definite.
    Positively homogeneous activations of degree 1 (the ReLU family, the identity) are exempt:
    their correlation map has slope exactly 1 at :math:`c = 1` (:math:`\mathbb E[\phi^2] =
    \Sigma\,\mathbb E[\phi'^2]` by Gaussian integration by parts), and the correlation snapping
    of :func:`correlation` keeps identical points at exactly :math:`c = 1`.
    """
    return getattr(activation, "homogeneity_degree", None) != 1.0


def _identical_pairs(var1: Tensor, cov: Tensor, var2: Tensor) -> Tensor:
    """Which pairs are one point twice: equal variances and a correlation that snaps to 1.

    Equal variances and :math:`c = 1` mean equal points (Cauchy-Schwarz, with or without
    bias); two zero-variance inputs (zero-norm, no bias) are also one point.
    """
    root_snap = 1.0 + _SNAP_ULPS * torch.finfo(cov.dtype).eps
    with torch.no_grad():
        c = cov * outer(_masked_rsqrt(var1) * root_snap, _masked_rsqrt(var2) * root_snap)
        return (var1 == var2) & ((c >= 1.0) | (var1 == 0))


def _shared_variances(var1: Tensor, var2: Tensor, symmetric: bool) -> bool:
    """Whether a variance of one side occurs on the other (within the side when symmetric),
    a necessary condition for a duplicated point; O(n log n). Batches are pooled, which can
    only add candidates."""
    with torch.no_grad():
        var1, var2 = var1.reshape(-1), var2.reshape(-1)  # (batched statistics are strided views)
        if symmetric:
            return var1.numel() > torch.unique(var1).numel()
        return bool(torch.isin(var1, var2).any())


class _IdenticalPoints:
    """The entries of a block that pair a point with itself, and how to overwrite them.

    Found once from the first layer (points equal there stay equal), they then take each
    layer's per-point values (:meth:`substitute`). The diagonal of a symmetric block is always
    such an entry and costs O(n); off-diagonal ones (duplicate rows) an n x m selection, only
    where there are any.
    """

    def __init__(
        self,
        cov: Tensor,
        stats1: Tensor,
        stats2: Tensor,
        symmetric: bool,
        distinct: bool = False,
    ) -> None:
        self.symmetric = symmetric
        compiling = torch.compiler.is_compiling()
        if not compiling and (distinct or not _shared_variances(stats1[..., 0], stats2[..., 0], symmetric)):
            # no two points share a first-layer variance: no duplicates, and no n x m search
            self.mask = None
            return
        mask = _identical_pairs(stats1[..., 0].unsqueeze(-1), cov, stats2[..., 0].unsqueeze(-2))
        if symmetric:
            eye = torch.eye(cov.shape[-1], dtype=torch.bool, device=cov.device)
            mask = mask & ~eye
        # (a compiled graph selects unconditionally rather than branch on the data)
        self.mask = mask if compiling or bool(mask.any()) else None
        if self.mask is not None and symmetric:
            self.mask = self.mask | eye

    @property
    def active(self) -> bool:
        """Whether any entry is to be overwritten."""
        return self.mask is not None or self.symmetric

    def substitute(
        self, values: Tensor, point1: Tensor, point2: Tensor | None, inplace: bool = True
    ) -> Tensor:
        """``values`` (``(..., n, m)``) with the identical pairs' entries from the per-point
        ``point1`` (``(..., n)``) and ``point2`` (``(..., m)``); ``inplace``: ``values`` is a
        temporary that may be overwritten where autograd allows."""
        if self.mask is not None:
            # the mean of the two sides' (equal) values is exact and keeps k(X, X) symmetric;
            # it also halves the gradient to each side, as the partial derivatives of k(x, y)
            # at x = y are half the derivative of the variance map k(x, x)
            pairs = 0.5 * (point1.unsqueeze(-1) + point2.unsqueeze(-2))
            return torch.where(self.mask, pairs, values)
        if not self.symmetric:
            return values
        if inplace and _grad_free(values, point1) and not torch.compiler.is_compiling():
            diagonal = values.diagonal(dim1=-2, dim2=-1)
            diagonal.copy_(point1.expand_as(diagonal))
            return values
        eye = torch.eye(values.shape[-1], dtype=torch.bool, device=values.device)
        return torch.where(eye, point1.unsqueeze(-1), values)


def _tangent(
    cov: Tensor,
    q: Tensor,
    bias: Tensor | None,
    layer: int,
    standard_ntk: tuple[Tensor, Sequence[float]] | None,
) -> Tensor:
    # what a layer adds to the NTK besides the back-propagated term: its own covariance in the
    # NTK parameterization, n_l q (+1 with biases) in the standard one
    if standard_ntk is None:
        return cov
    tangent = standard_ntk[1][layer] * q
    return tangent if bias is None else tangent + 1.0


def _vector_shaped(value: Tensor | float | None) -> Tensor | float | None:
    """A ``(..., 1, 1)`` matrix-shaped variance as ``(..., 1)``, to broadcast against ``(..., n)``."""
    return value.squeeze(-1) if isinstance(value, Tensor) and value.dim() >= 2 else value


def _symmetrize(a: Tensor) -> Tensor:
    return 0.5 * (a + a.transpose(-1, -2))


def _affine(q: Tensor, weight_variance: Tensor | float, bias_variance: Tensor | None) -> Tensor:
    if bias_variance is None:
        return weight_variance * q
    if isinstance(weight_variance, Tensor):
        return torch.addcmul(bias_variance, weight_variance, q)
    return weight_variance * q + bias_variance


def double_factorial(n: int) -> int:
    """(n)!! with (-1)!! = 0!! = 1."""
    return math.prod(range(n, 0, -2)) if n > 0 else 1
