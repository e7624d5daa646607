r"""The layer recursion: per-point statistics, block and diagonal recursion, the first layer.

Everything here works on covariance tensors that broadcast against each other:

* full mode: ``var1`` is ``(..., n, 1)``, ``cov`` is ``(..., n, m)``, ``var2`` is ``(..., 1, m)``;
* diagonal mode: all three are ``(..., n)``.

No function here knows about a particular activation: each layer asks the
:class:`~gp_ntk.activations.Activation` for its dual kernel
:math:`\mathbb E[\phi(u)\phi(v)]` and derivative dual :math:`\mathbb E[\phi'(u)\phi'(v)]`.
The first layer's covariances (:func:`first_layer_variances`, :func:`first_layer_covariance`)
are computed here and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .ops import (
    broadcast_shape,
    grad_free,
    masked_sqrt,
    outer,
    scaled_correlation,
    snapped_rsqrt,
    symmetrize,
)
from .ops.relu_family import ONE_THREAD_BELOW, relu_family_recursion

if TYPE_CHECKING:
    from .activations import Activation

__all__ = [
    "block_recursion",
    "first_layer_covariance",
    "first_layer_variances",
    "fused_block_coefficients",
    "identical_pairs",
    "layer_recursion",
    "linear_covariances",
    "needs_identical_points",
    "output_variances",
    "point_statistics",
    "relu_family_coefficients",
    "shares_variances",
    "zero_variances",
]


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
    if diag:
        var1 = first_layer_variances(x1, w, bias_variance)
        if x1 is x2:
            return var1, var1, var1
        cov = (x1 * w * x2).sum(-1)
        if bias_variance is not None:
            cov = cov + bias_variance.squeeze(-1)
        return var1, cov, first_layer_variances(x2, w, bias_variance)
    cov = first_layer_covariance(x1, x2, w, bias_variance, symmetric=x1 is x2)
    if x1 is x2:
        return _diagonal_variances(cov)
    var1 = first_layer_variances(x1, w, bias_variance).unsqueeze(-1)
    var2 = first_layer_variances(x2, w, bias_variance).unsqueeze(-2)
    return var1, cov, var2


def first_layer_variances(x: Tensor, weight_variance: Tensor, bias_variance: Tensor | None) -> Tensor:
    r""":math:`\Sigma^{(1)}(x, x) = b + \sum_i w_i x_i^2` per point, ``(..., n)``.

    ``weight_variance`` broadcasts against ``(..., 1, d)``, ``bias_variance`` (or ``None``) against
    ``(..., 1, 1)``, as the kernels hold them.
    """
    var = (x * x * weight_variance).sum(-1)
    return var if bias_variance is None else var + bias_variance.squeeze(-1)


def first_layer_covariance(
    x1: Tensor,
    x2: Tensor,
    weight_variance: Tensor,
    bias_variance: Tensor | None,
    symmetric: bool = False,
) -> Tensor:
    r""":math:`\Sigma^{(1)}(x, y) = b + \sum_i w_i x_i y_i` for all pairs, ``(..., n, m)``.

    With ``symmetric`` (``x1`` and ``x2`` are one set :math:`X`) the result is symmetrised:
    BLAS does not promise a bitwise-symmetric :math:`x x^\top`, near-duplicate rows would turn
    that last-bit asymmetry into a visible one through ``arccos``, and every later map is
    elementwise and commutes with transposition, so symmetrising once here makes
    :math:`k(X, X)` exactly symmetric.
    """
    cov = (x1 * weight_variance) @ x2.mT
    if torch.compiler.is_compiling():
        # (a compiled graph keeps the plain form: the compiler fuses it, and no shape test guards it)
        cov = cov if bias_variance is None else cov + bias_variance
        return symmetrize(cov) if symmetric else cov
    if symmetric:
        # symmetrize(cov), the halving in place (autograd saves neither step's output)
        cov = torch.add(cov, cov.mT).mul_(0.5)
    if bias_variance is None:
        return cov
    if broadcast_shape(cov.shape, bias_variance.shape) == cov.shape:
        return cov.add_(bias_variance)
    return cov + bias_variance


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
    weight_variances: Sequence[Tensor | None],
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

    A last weight variance of ``None`` (its bias variance ``None`` too) ends the network at
    its last activation, with no affine map after it: that layer maps
    :math:`\Sigma' = q` and :math:`\Theta' = \dot q\,\Theta` (a nonlinearity has no parameters,
    so it adds no tangent term), in either parameterization.

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
    identical = None if same or not needs_identical_points(activation) else identical_pairs(var1, cov, var2)
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
            ntk = _ntk_step(ntk, cov_next, q, q_dot, w, b, layer, standard_ntk)
        cov = cov_next
        if same:
            var1 = var2 = cov
    return cov, ntk


def point_statistics(
    var: Tensor,
    activation: Activation,
    weight_variances: Sequence[Tensor | float | None],
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
        :math:`v_l = 0`, scaled by the snapping factor of :func:`~gp_ntk.ops.correlation.correlation`).

    :func:`block_recursion` takes these for the rows and the columns of a block, so that a
    block of a large matrix costs only its own n x m work.
    """
    variances = [var]
    for layer in range(1, len(weight_variances)):
        var = _affine(activation.variance(var), weight_variances[layer - 1], bias_variances[layer - 1])
        variances.append(var)
    # (..., L, n): one root of each kind for all layers, since for a small block each operation
    # on the statistics costs its dispatch rather than its arithmetic
    var = torch.stack(torch.broadcast_tensors(*variances), dim=-2)
    # Stored column-major (each statistic contiguous over the points): a fused block loop runs
    # over the columns of the block and reads one statistic of every column per layer, which is
    # then a contiguous, vectorisable load instead of a gather with a stride of 3L entries
    # (measured at depth 20, N = 8000: compiled evaluation 8.6 s row-major, see docs/benchmarks.md).
    columns = torch.stack([var, masked_sqrt(var), snapped_rsqrt(var)], dim=-2)  # (..., L, 3, n)
    return columns.flatten(-3, -2).mT


def zero_variances(stats: Tensor) -> tuple[bool, ...]:
    """Per layer, whether any point of ``stats`` (from :func:`point_statistics`) has variance 0."""
    # (one device sync for all layers)
    return tuple((stats[..., 0::3] == 0).reshape(-1, stats.shape[-1] // 3).any(0).tolist())


def output_variances(
    stats: Tensor,
    activation: Activation,
    weight_variances: Sequence[Tensor | float | None],
    bias_variances: Sequence[Tensor | None],
) -> Tensor:
    """``(..., n, L + 1)``: every layer's variance (the columns of :func:`point_statistics`)
    and the output's, the variance after the last (activation, affine) layer (after the last
    activation where its weight variance is ``None``)."""
    last = stats[..., 3 * (len(weight_variances) - 1)]
    output = _affine(activation.variance(last), weight_variances[-1], bias_variances[-1])
    return torch.cat([stats[..., 0::3], output.unsqueeze(-1)], dim=-1)


def block_recursion(
    cov: Tensor,
    stats1: Tensor,
    stats2: Tensor,
    activation: Activation,
    weight_variances: Sequence[Tensor | float | None],
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
    # (a compiled graph takes the generic recursion: the compiler fuses its operations itself)
    # (the fused path pays on small blocks, where the number of matrix-sized operations
    # dominates; above 2**18 entries the generic recursion was measured faster: docs/benchmarks.md)
    # (with duplicated points to overwrite, the generic recursion: the fused one has no hook for
    # them. The diagonal of k(X, X) needs none there: its correlation is set to exactly 1 in
    # every layer and its duals are taken from the points' own statistics, so its rounding does
    # not compound through the layers as a correlation's would)
    fusable = identical is None or identical.mask is None
    if fusable and not torch.compiler.is_compiling() and cov.numel() < ONE_THREAD_BELOW:
        coefficients = fused_block_coefficients(activation)
        if coefficients is not None:
            # ReLU family and rectified square: all layers in one autograd function with a
            # closed-form backward pass; `generic` serves its double backward

            def generic(cov, stats1, stats2, theta, weights, biases):
                standard = None if theta is None else (theta, standard_ntk[1])
                return _block_layers(
                    cov,
                    stats1,
                    stats2,
                    activation,
                    weights,
                    biases,
                    compute_ntk,
                    symmetric,
                    zeros,
                    standard,
                    None,
                )

            alpha, beta, order = coefficients
            # (a fixed variance given as a number, as the arc-cosine kernel's, as a constant tensor)
            weights, biases = (
                [
                    torch.tensor(v, dtype=cov.dtype, device=cov.device) if isinstance(v, (int, float)) else v
                    for v in group
                ]
                for group in (weight_variances, bias_variances)
            )
            return relu_family_recursion(
                alpha,
                beta,
                cov,
                stats1,
                stats2,
                weights,
                biases,
                compute_ntk,
                symmetric,
                zeros,
                standard_ntk,
                generic,
                order,
            )
    return _block_layers(
        cov,
        stats1,
        stats2,
        activation,
        weight_variances,
        bias_variances,
        compute_ntk,
        symmetric,
        zeros,
        standard_ntk,
        identical,
    )


def relu_family_coefficients(activation: Activation) -> tuple[float, float] | None:
    """``(alpha, beta)`` of a ReLU-family activation (see ``gp_ntk.ops.relu_family``), else ``None``."""
    from .activations.relu_family import ABReLU

    return activation.relu_family_coefficients() if isinstance(activation, ABReLU) else None


def fused_block_coefficients(activation: Activation) -> tuple[float, float, int] | None:
    """``(alpha, beta, order)`` of an activation whose block ``gp_ntk.ops.relu_family`` fuses:
    the ReLU family (order 1) and the rectified monomials ``ArcCos(1)``, ``ArcCos(2)``; else ``None``."""
    from .activations.relu_family import ArcCos

    coefficients = relu_family_coefficients(activation)
    if coefficients is not None:
        return (*coefficients, 1)
    # (the class itself: a subclass may define other duals)
    if type(activation) is ArcCos and activation.order in (1, 2):
        return 1.0 / (2.0 * math.pi), 0.0, activation.order
    return None


def _block_layers(
    cov: Tensor,
    stats1: Tensor,
    stats2: Tensor,
    activation: Activation,
    weight_variances: Sequence[Tensor | float | None],
    bias_variances: Sequence[Tensor | None],
    compute_ntk: bool,
    symmetric: bool,
    zeros: tuple[tuple[bool, ...], tuple[bool, ...]],
    standard_ntk: tuple[Tensor, Sequence[float]] | None,
    identical: _IdenticalPoints | None,
) -> tuple[Tensor, Tensor | None]:
    """The layers of :func:`block_recursion` by the activation's duals, differentiable by autograd."""
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
            both_zero = zeros[0][layer] and zeros[1][layer]
            c = scaled_correlation(cov, rstd1, rstd2, var1, var2, both_zero, symmetric)
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
            ntk = _ntk_step(ntk, cov_next, q, q_dot, w, b, layer, standard_ntk)
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
    of :func:`~gp_ntk.ops.correlation.correlation` keeps identical points at exactly :math:`c = 1`.
    """
    return getattr(activation, "homogeneity_degree", None) != 1.0


def identical_pairs(var1: Tensor, cov: Tensor, var2: Tensor) -> Tensor:
    """Which pairs are one point twice: equal variances and a correlation that snaps to 1.

    Equal variances and :math:`c = 1` mean equal points (Cauchy-Schwarz, with or without
    bias); two zero-variance inputs (zero-norm, no bias) are also one point.
    """
    with torch.no_grad():
        c = cov * outer(snapped_rsqrt(var1), snapped_rsqrt(var2))
        return (var1 == var2) & ((c >= 1.0) | (var1 == 0))


def shares_variances(var1: Tensor, var2: Tensor, symmetric: bool) -> bool:
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
        if not compiling and (distinct or not shares_variances(stats1[..., 0], stats2[..., 0], symmetric)):
            # no two points share a first-layer variance: no duplicates, and no n x m search
            self.mask = None
            return
        mask = identical_pairs(stats1[..., 0].unsqueeze(-1), cov, stats2[..., 0].unsqueeze(-2))
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
        if inplace and grad_free(values, point1) and not torch.compiler.is_compiling():
            diagonal = values.diagonal(dim1=-2, dim2=-1)
            diagonal.copy_(point1.expand_as(diagonal))
            return values
        eye = torch.eye(values.shape[-1], dtype=torch.bool, device=values.device)
        return torch.where(eye, point1.unsqueeze(-1), values)


def _ntk_step(
    ntk: Tensor,
    cov: Tensor,
    q: Tensor,
    q_dot: Tensor,
    weight: Tensor | float | None,
    bias: Tensor | None,
    layer: int,
    standard_ntk: tuple[Tensor, Sequence[float]] | None,
) -> Tensor:
    """The NTK after one (activation, affine) layer whose covariance is ``cov``."""
    if weight is None:
        # the network ends at this activation: only the back-propagated term
        return q_dot * ntk
    # what the affine map adds besides the back-propagated term: its own covariance in the
    # NTK parameterization, n_l q (+1 with biases) in the standard one
    if standard_ntk is None:
        tangent = cov
    else:
        tangent = standard_ntk[1][layer] * q
        tangent = tangent if bias is None else tangent + 1.0
    return torch.addcmul(tangent, weight * q_dot, ntk)


def _vector_shaped(value: Tensor | float | None) -> Tensor | float | None:
    """A ``(..., 1, 1)`` matrix-shaped variance as ``(..., 1)``, to broadcast against ``(..., n)``."""
    return value.squeeze(-1) if isinstance(value, Tensor) and value.dim() >= 2 else value


def _affine(q: Tensor, weight_variance: Tensor | float | None, bias_variance: Tensor | None) -> Tensor:
    if weight_variance is None:  # no affine map after the last activation (no read-out layer)
        return q
    if bias_variance is None:
        return weight_variance * q
    if isinstance(weight_variance, Tensor):
        return torch.addcmul(bias_variance, weight_variance, q)
    return weight_variance * q + bias_variance
