r"""A small unit-variance block of a ReLU-family kernel as one autograd function.

An acquisition function evaluates a BO surrogate's kernel thousands of times on blocks of a
few by a hundred points, where every torch operation costs its dispatch rather than its
arithmetic, and every differentiable one adds an autograd node. :class:`_UnitBlock` takes the
inputs and the layers' variances to the correlation matrix

.. math::
    \tilde k(x_i, y_j) = \frac{k(x_i, y_j)}{\sqrt{k(x_i, x_i)\,k(y_j, y_j)}}

in one forward pass (the first layer, the per-point statistics, the block recursion of
:func:`~gp_ntk.ops.relu_family.relu_family_layers` and the diagonals) and writes the backward
pass by hand, reusing :func:`~gp_ntk.ops.relu_family.block_backward` for the block. Besides
the block, everything is a recursion over the points' variances: for a positively homogeneous
activation of degree :math:`n` (1 for :math:`\phi(u) = a\min(u, 0) + b\max(u, 0)`, 2 for the
rectified square), :math:`f(v) = \mathbb E[\phi(u)^2] = m v^n` and
:math:`g(v) = \mathbb E[\phi'(u)^2] = m' v^{n-1}` for :math:`u \sim N(0, v)`, and

.. math::
    v_0 = b_0 + \sum_i w_{0,i} x_i^2,\quad v_{l+1} = b_l + w_l f(v_l),\quad
    \Theta_0 = v_0,\quad \Theta_{l+1} = v_{l+1} + w_l\,g(v_l)\,\Theta_l,

a point's variance :math:`k(x, x)` being :math:`\Theta_L` (NTK) or :math:`v_L` (NNGP). For the
ReLU family :math:`m = m' = (a^2 + b^2)/2` and the recursion is linear; for the rectified
square :math:`m = 3/2`, :math:`m' = 2`.
The values are those of the generic evaluation (for the ReLU family the same operations in the
same order, for the rectified square the same to rounding); where a second derivative is asked
for, the backward pass differentiates the generic evaluation instead.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from ..ops.autograd import gradient_nodes, wanted_gradients
from ..ops.correlation import snap_factor
from ..ops.relu_family import block_backward, one_thread, relu_family_layers
from ..ops.shapes import sum_to_shape
from ..recursion import (
    block_recursion,
    first_layer_covariance,
    first_layer_variances,
    identical_pairs,
    layer_recursion,
    point_statistics,
)
from .unit_variance import correlation_from_covariance, variance_scale

__all__ = ["unit_variance_block", "unit_variance_block_reference"]


def _vector(value: Tensor) -> Tensor:
    """A ``(..., 1, 1)`` variance as ``(..., 1)``, to broadcast against ``(..., n)``."""
    return value.squeeze(-1)


def unit_variance_block_reference(
    activation,
    x1: Tensor,
    x2: Tensor,
    weight: Tensor,
    bias: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    compute_ntk: bool,
    symmetric: bool,
) -> Tensor:
    """The same matrix by the generic, autograd-differentiable evaluation (second derivatives)."""
    cov = first_layer_covariance(x1, x2, weight, bias, symmetric)
    vectors = [_vector(w) for w in weights], [_vector(b) for b in biases]
    var1 = first_layer_variances(x1, weight, bias)
    stats1 = point_statistics(var1, activation, *vectors)
    var2 = var1 if symmetric else first_layer_variances(x2, weight, bias)
    stats2 = stats1 if symmetric else point_statistics(var2, activation, *vectors)
    nngp, ntk = block_recursion(cov, stats1, stats2, activation, weights, biases, compute_ntk, symmetric)
    matrix = ntk if compute_ntk else nngp
    if symmetric:
        diagonal = matrix.diagonal(dim1=-2, dim2=-1)
        return correlation_from_covariance(matrix, diagonal, diagonal)
    diagonals = []
    for var in (var1, var2):
        nngp_diag, ntk_diag = layer_recursion(var, var, var, activation, *vectors, compute_ntk, diag=True)
        diagonals.append(ntk_diag if compute_ntk else nngp_diag)
    return correlation_from_covariance(matrix, *diagonals)


def _forward(spec: tuple, x1: Tensor, x2: Tensor, weight: Tensor, bias: Tensor, values, save: bool):
    alpha, beta, order, _, num_layers, compute_ntk, symmetric, stats1, stats2, diag1, diag2, pairs = spec
    weights, biases = values[:num_layers], values[num_layers:]
    cov = first_layer_covariance(x1, x2, weight, bias, symmetric)
    no_zeros = (False,) * num_layers
    nngp, ntk, saved = relu_family_layers(
        alpha,
        beta,
        cov,
        stats1,
        stats2,
        cov if compute_ntk else None,
        weights,
        biases,
        None,
        compute_ntk,
        symmetric,
        (no_zeros, no_zeros),
        save,
        order,
    )
    matrix = ntk if compute_ntk else nngp
    if symmetric:
        diag1 = diag2 = matrix.diagonal(dim1=-2, dim2=-1)
    out = correlation_from_covariance(matrix, diag1, diag2)
    identical = None
    if pairs:
        # a point paired with itself has correlation 1 for every input and variance: a constant,
        # which the recursion would only approximate where its correlation map is chaotic
        identical = identical_pairs(stats1[..., 0].unsqueeze(-1), cov, stats2[..., 0].unsqueeze(-2))
        out = out.masked_fill_(identical, 1.0)
    return out, cov, saved, diag1, diag2, identical


def _side_backward(
    stats: Tensor,
    columns: list[Tensor | None],
    g_diag: Tensor | None,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    g_values: list[Tensor | None],
    moments: tuple[float, float],
    order: int,
    compute_ntk: bool,
    wants_values: bool = True,
) -> Tensor:
    """The gradient of one side's first-layer variances ``v_0``; the variances' gradients are
    added to ``g_values`` (weights first, then biases, as ``values``) if ``wants_values``.

    ``moments``: :math:`(m, m')` of the module docstring, ``order`` the degree :math:`n`.

    ``columns``: the block's gradients of the statistics' columns (:func:`block_backward`'s, each
    ``snap`` times its value); ``g_diag``: that of the points' own variances ``k(x, x)``.
    """
    num_layers = len(weights)
    snap = snap_factor(stats.dtype)
    var, rstd = stats[..., 0::3], stats[..., 2::3]  # (..., n, L)
    zero = stats.new_zeros(stats.shape[:-1])
    g_std = torch.stack([zero if c is None else c for c in columns[1::3]], dim=-1)
    g_rstd = torch.stack([zero if c is None else c for c in columns[2::3]], dim=-1)
    # s = sqrt(v) and r = snap / s: ds/dv = r / (2 snap), dr/dv = -r / (2 v)
    direct = g_std.div_(snap).sub_(g_rstd.div_(var)).mul_(rstd).mul_(0.5 / snap).unbind(-1)
    shared = all(w is weights[0] for w in weights)
    layer_weights = [_vector(weights[0])] * num_layers if shared else [_vector(w) for w in weights]
    variance_moment, derivative_moment = moments
    if order == 1:
        # f and g linear and constant: dv_{k+1}/dv_k = w_k m, dTheta_{k+1}/dTheta_k = w_k m'
        slopes = [w * variance_moment for w in layer_weights]
        gains = (
            slopes if derivative_moment == variance_moment else [w * derivative_moment for w in layer_weights]
        )
        curvatures = None
    else:
        # dv_{k+1}/dv_k = w_k f'(v_k), dTheta_{k+1}/dTheta_k = w_k g(v_k); Theta_{k+1} also
        # depends on v_k through g: w_k g'(v_k) Theta_k
        layer_vars = var.unbind(-1)
        powers = [v ** (order - 1) for v in layer_vars]
        slopes = [w * (order * variance_moment) * p for w, p in zip(layer_weights, powers)]
        gains = [w * derivative_moment * p for w, p in zip(layer_weights, powers)]
        # (order 2, the only other fused order: g'(v) = m', a constant)
        curvatures = [w * derivative_moment for w in layer_weights]
    if g_diag is not None:
        # (every map below is per point: a side shared across a batch of blocks sums it first,
        # like the columns' gradients, which arrive summed)
        g_diag = sum_to_shape(g_diag, stats.shape[:-1])
    ntk_diagonal = compute_ntk and g_diag is not None
    thetas = None
    if ntk_diagonal and (curvatures is not None or wants_values):
        thetas = [var[..., 0]]
        for k in range(1, num_layers):
            thetas.append(torch.addcmul(var[..., k], gains[k - 1], thetas[-1]))
    # top-down through v_{k+1} = b_k + w_k f(v_k) and Theta_{k+1} = v_{k+1} + w_k g(v_k) Theta_k:
    # v_L (and Theta_L) receive g_diag; v_k receives its statistics' gradient, w_k f'(v_k) times
    # v_{k+1}'s, w_k g'(v_k) Theta_k times Theta_{k+1}'s and (Theta_k = v_k + ...) Theta_k's,
    # w_k g(v_k) times Theta_{k+1}'s
    g_var = [None] * num_layers + [g_diag if g_diag is not None else zero]
    g_theta = [None] * num_layers + [g_diag if ntk_diagonal else None]
    for k in range(num_layers - 1, -1, -1):
        g = torch.addcmul(direct[k], g_var[k + 1], slopes[k])
        if g_theta[k + 1] is not None:
            if curvatures is not None:
                g = g.addcmul_(g_theta[k + 1], curvatures[k] * thetas[k])
            g_theta[k] = g_theta[k + 1] * gains[k]
            g = g.add_(g_theta[k])
        g_var[k] = g
    if not wants_values:
        return g_var[0]
    # the variances' gradients: d/db_k = sum g_v{k+1}, d/dw_k = sum (g_v{k+1} f(v_k) + g_Theta{k+1} g(v_k) Theta_k)
    upper = torch.stack(g_var[1:], dim=-1)  # (..., n, L)
    g_bias = upper.sum(-2)
    g_weight = (upper * (var if order == 1 else var**order)).sum(-2) * variance_moment
    if g_theta[-1] is not None:
        terms = torch.stack(g_theta[1:], dim=-1) * torch.stack(thetas, dim=-1)
        if order > 1:
            terms = terms * var ** (order - 1)
        g_weight = g_weight + terms.sum(-2) * derivative_moment
    for offset, group, grads in ((0, weights, g_weight), (num_layers, biases, g_bias)):
        if all(v is group[0] for v in group):
            # one tensor for every layer: its gradient in one place (autograd sums the others')
            parts = [grads.sum(-1, keepdim=True)] + [None] * (num_layers - 1)
        else:
            parts = list(grads.unsqueeze(-1).unbind(-2))
        for k, part in enumerate(parts):
            if part is None:
                continue
            part = sum_to_shape(part.unsqueeze(-1), group[k].shape)
            index = offset + k
            g_values[index] = part if g_values[index] is None else g_values[index] + part
    return g_var[0]


class _UnitBlock(torch.autograd.Function):
    """:func:`unit_variance_block` with a hand-written backward pass."""

    @staticmethod
    def forward(ctx, spec, reference, x1, x2, weight, bias, *values):  # type: ignore[override]
        with one_thread(x1.shape[-2] * x2.shape[-2]):
            out, cov, saved, diag1, diag2, identical = _forward(spec, x1, x2, weight, bias, values, True)
        ctx.set_materialize_grads(False)
        ctx.spec, ctx.reference, ctx.layers, ctx.cov = spec, reference, saved, cov
        ctx.identical = identical
        ctx.nodes = gradient_nodes((x1, x2, weight, bias, *values))
        ctx.save_for_backward(x1, x2, weight, bias, out, diag1, diag2, *values)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        if grad is None:
            return (None,) * (6 + 2 * ctx.spec[4])
        if torch.is_grad_enabled():
            return _UnitBlock._differentiable_backward(ctx, grad)
        with one_thread(grad.shape[-2] * grad.shape[-1]):
            return _UnitBlock._backward(ctx, grad)

    @staticmethod
    def _differentiable_backward(ctx, grad):
        x1, x2, weight, bias, _, _, _, *values = ctx.saved_tensors
        num_layers, symmetric = ctx.spec[4], ctx.spec[6]
        inputs = [x1, x2, weight, bias, *values]
        # (for k(X, X) the rows are also the columns: one gradient, returned for x1)
        wanted = [i for i in range(len(inputs)) if ctx.needs_input_grad[2 + i] and not (symmetric and i == 1)]
        grads: list[Tensor | None] = [None] * len(inputs)
        if wanted:
            out = ctx.reference(
                x1, x1 if symmetric else x2, weight, bias, values[:num_layers], values[num_layers:]
            )
            found = torch.autograd.grad(
                out, [inputs[i] for i in wanted], grad, create_graph=True, allow_unused=True
            )
            for i, g in zip(wanted, found):
                grads[i] = g
        return (None, None, *grads)

    @staticmethod
    def _backward(ctx, grad):
        alpha, beta, order, moments, num_layers, compute_ntk, symmetric, stats1, stats2, _, _, _ = ctx.spec
        x1, x2, weight, bias, out, diag1, diag2, *values = ctx.saved_tensors
        weights, biases = values[:num_layers], values[num_layers:]
        # x1, x2, weight, bias, *values: those this backward pass will use (an acquisition
        # function's gradient wants the candidates' rows only, not the hyperparameters)
        needs = wanted_gradients(ctx.nodes, ctx.needs_input_grad[2:])
        wants_values = any(needs[2:])
        # a side's statistics carry the gradient of its inputs and of every variance
        side1 = needs[0] or wants_values or (symmetric and needs[1])
        side2 = not symmetric and (needs[1] or wants_values)
        if not (side1 or side2):
            return (None,) * (6 + 2 * num_layers)
        if ctx.identical is not None:
            grad = grad.masked_fill(ctx.identical, 0.0)  # (constant entries)
        tiny = torch.finfo(out.dtype).tiny
        # (scaled as the forward pass scaled them, where their product could overflow)
        scale = variance_scale(diag1, diag2)
        scaled = (diag1, diag2) if scale is None else (diag1 * scale, diag2 * scale)
        product = scaled[0].unsqueeze(-1) * scaled[1].unsqueeze(-2)
        # out = k / sqrt(d1 d2): dk = g / sqrt(d1 d2), d(d1)_i = -sum_j g_ij out_ij / (2 d1_i)
        g_matrix = (grad if scale is None else grad * scale) / product.clamp_min(tiny).sqrt()
        g_out = grad * out
        if bool((product <= tiny).any()):
            # (clamped products are constants)
            g_out = g_out.masked_fill(product <= tiny, 0.0)
        # (for k(X, X) side1 holds here, and both diagonals' gradients enter its diagonal)
        g_diag1 = g_out.sum(-1).div_(diag1).mul_(-0.5) if side1 else None
        g_diag2 = g_out.sum(-2).div_(diag2).mul_(-0.5) if side2 or symmetric else None
        if symmetric:
            g_matrix.diagonal(dim1=-2, dim2=-1).add_(g_diag1 + g_diag2)
        no_zeros = (False,) * num_layers
        block_spec = (alpha, beta, num_layers, compute_ntk, symmetric, (no_zeros, no_zeros), None, order)
        block_needs = (True, side1, side2 or symmetric, False, *needs[4:])
        g_cov, columns1, columns2, _, block_values = block_backward(
            block_spec,
            ctx.layers,
            ctx.cov,
            stats1,
            stats2,
            None,
            values,
            block_needs,
            None if compute_ntk else g_matrix,
            g_matrix if compute_ntk else None,
        )
        g_values = list(block_values)
        side = functools.partial(
            _side_backward,
            weights=weights,
            biases=biases,
            g_values=g_values,
            moments=moments,
            order=order,
            compute_ntk=compute_ntk,
            wants_values=wants_values,
        )
        g_var1 = g_var2 = None
        if symmetric:
            columns = [a if b is None else (b if a is None else a + b) for a, b in zip(columns1, columns2)]
            g_var1 = side(stats1, columns, None)
        else:
            if side1:
                g_var1 = side(stats1, columns1, g_diag1)
            if side2:
                g_var2 = side(stats2, columns2, g_diag2)
        # the first layer: cov = b + (x1 w) x2^T (symmetrised for k(X, X)), v = b + sum_i w_i x_i^2.
        # Each term is summed to its input's shape on its own: a side shared across a batch of
        # blocks has its variances' gradient summed over that batch already.
        if symmetric:
            g_cov = g_cov + g_cov.mT
            g_cov.mul_(0.5)
        g_x1 = g_x2 = g_weight = g_bias = None
        if needs[0] or needs[2]:
            rows = g_cov @ x2  # (the weight applied after: one product serves x1 and the weight)
            if needs[0]:
                g_x1 = sum_to_shape(rows * weight, x1.shape)
                if symmetric:
                    g_x1 = g_x1 + sum_to_shape(g_cov.mT @ (x1 * weight), x1.shape)
            if needs[2]:
                g_weight = sum_to_shape((rows * x1).sum(-2, keepdim=True), weight.shape)
        if not symmetric and needs[1]:
            g_x2 = sum_to_shape((g_cov.mT @ x1) * weight, x2.shape)
        if needs[3]:
            g_bias = sum_to_shape(g_cov.sum((-1, -2), keepdim=True), bias.shape)
        for x, g_var, first in ((x1, g_var1, True), (x2, g_var2, False)):
            if g_var is None:
                continue
            if needs[0 if first else 1]:
                term = sum_to_shape((2.0 * g_var).unsqueeze(-1) * x * weight, x.shape)
                if first:
                    g_x1 = term if g_x1 is None else g_x1 + term
                else:
                    g_x2 = term if g_x2 is None else g_x2 + term
            if needs[2]:
                g_weight = g_weight + sum_to_shape(
                    (g_var.unsqueeze(-1) * x * x).sum(-2, keepdim=True), weight.shape
                )
            if needs[3]:
                g_bias = g_bias + sum_to_shape(g_var.sum(-1, keepdim=True).unsqueeze(-1), bias.shape)
        g_values = [g if need else None for g, need in zip(g_values, needs[4:])]
        return (None, None, g_x1, None if symmetric else g_x2, g_weight, g_bias, *g_values)


def unit_variance_block(
    activation,
    coefficients: tuple[float, float, int],
    x1: Tensor,
    x2: Tensor,
    weight: Tensor,
    bias: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    stats1: Tensor,
    stats2: Tensor,
    diag1: Tensor | None,
    diag2: Tensor | None,
    compute_ntk: bool,
    identical: bool = False,
) -> Tensor:
    r"""The unit-variance matrix :math:`k(x_i, y_j) / \sqrt{k(x_i, x_i)\,k(y_j, y_j)}` of a
    ReLU-family or rectified-square network kernel, one autograd node (``x2 is x1``:
    :math:`k(X, X)`, exactly symmetric with an exactly unit diagonal).

    Args:
        activation: the activation; ``coefficients`` its ``(alpha, beta, order)``
            (:func:`~gp_ntk.recursion.fused_block_coefficients`).
        x1, x2: ``(..., n, d)`` and ``(..., m, d)`` inputs.
        weight, bias: the first layer's variances, ``(..., 1, d)`` or ``(..., 1, 1)`` and ``(..., 1, 1)``.
        weights, biases: the variances of the affine map after each activation, ``(..., 1, 1)``.
        stats1, stats2: the sides' :func:`~gp_ntk.recursion.point_statistics` of these inputs and
            variances, computed without gradient, with no zero variance (``stats2`` is
            ``stats1`` for ``x2 is x1``).
        diag1, diag2: the points' own variances :math:`k(x, x)` (``None`` for ``x2 is x1``: the
            matrix's diagonal), computed without gradient.
        compute_ntk: the matrix is the NTK's (else the NNGP's).
        identical: look for pairs of one point twice (:func:`~gp_ntk.recursion.identical_pairs`)
            and set their entries to exactly 1, constants (as the generic evaluation does for
            activations whose correlation map is chaotic, see
            :func:`~gp_ntk.recursion.needs_identical_points`).
    """
    symmetric = x2 is x1
    unit = torch.ones((), dtype=torch.float64)
    moments = (float(activation.variance(unit)), float(activation.derivative_variance(unit)))
    spec = (
        *coefficients,
        moments,
        len(weights),
        compute_ntk,
        symmetric,
        stats1,
        stats2,
        diag1,
        diag2,
        identical,
    )
    values = (*weights, *biases)
    tensors = (x1, x2, weight, bias, *values)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):

        def reference(x1, x2, weight, bias, weights, biases):
            return unit_variance_block_reference(
                activation, x1, x2, weight, bias, weights, biases, compute_ntk, symmetric
            )

        return _UnitBlock.apply(spec, reference, x1, x2, weight, bias, *values)
    with one_thread(x1.shape[-2] * x2.shape[-2]):
        return _forward(spec, x1, x2, weight, bias, values, False)[0]
