r"""The block recursion of a ReLU-family network as one autograd function, and one-thread evaluation.

A small kernel block (N = 400: 160 000 entries) costs little arithmetic, but every elementwise
torch operation on it allocates, reads and writes a whole matrix, and autograd's backward pass
of the generic recursion adds several more per operation (and recomputes the arccos). For the
activations :math:`\phi(u) = a\min(u, 0) + b\max(u, 0)` (ReLU, leaky ReLU, abs) the duals are

.. math::
    q = s_1 s_2\,(\alpha J_1(c) + \beta c),\qquad \dot q = \alpha J_0(c) + \beta,
    \qquad \alpha = \frac{(a - b)^2}{2\pi},\ \beta = ab,

with :math:`c` the correlation, :math:`s_i` the standard deviations and Cho & Saul's
:math:`J_1 = \sin\theta + c\,(\pi - \theta)`, :math:`J_0 = \pi - \theta`. Their derivatives
are closed forms of what the forward pass has already computed:
:math:`\partial q/\partial c = s_1 s_2\,\dot q` (Price's theorem) and
:math:`\partial\dot q/\partial c = \alpha/\sin\theta`. :class:`_ReLUFamilyBlock` evaluates all
layers in one forward pass, saves per layer the correlation, :math:`\sin\theta`, :math:`q`,
:math:`\dot q` (and the NTK it received), and writes the backward pass by hand, with about a
third of the matrix operations and allocations of autograd's.

The rectified square :math:`\phi(u) = \max(u, 0)^2` (Cho & Saul's order 2, ``order=2``) has

.. math::
    q = \alpha\,(s_1 s_2)^2 J_2(c),\qquad \dot q = 4\alpha\,s_1 s_2\,J_1(c),\qquad
    J_2 = 3\sin\theta\cos\theta + (\pi - \theta)(1 + 2\cos^2\theta),

(:math:`\alpha = 1/2\pi`, :math:`\beta = 0`), whose derivatives are as closed:
:math:`\partial q/\partial c = s_1 s_2\,\dot q` (:math:`J_2' = 4J_1`),
:math:`\partial\dot q/\partial c = 4\alpha\,s_1 s_2\,(\pi - \theta)` (:math:`J_1' = J_0`, no
singularity at :math:`c = \pm 1`), :math:`\partial q/\partial s_1 = 2q/s_1` and
:math:`\partial\dot q/\partial s_1 = \dot q/s_1` (Cho & Saul 2009, as
:class:`~gp_ntk.activations.ArcCos`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from .autograd import gradient_nodes, wanted_gradients
from .correlation import snap_factor
from .shapes import broadcast_shape, sum_to_shape
from .workspace import matrix

#: blocks with fewer entries are evaluated (forward and backward) on one intra-op thread
ONE_THREAD_BELOW = 2**18


@contextlib.contextmanager
def one_thread(num_elements: int) -> Iterator[None]:
    """Run the body on one intra-op thread when it works on fewer than :data:`ONE_THREAD_BELOW` entries.

    Each elementwise operation on a matrix is an OpenMP parallel region; for a small matrix
    the region costs more than the work, and on a CPU shared with other processes a region
    waits for its slowest thread. ``torch.set_num_threads`` is process-wide: torch work run
    concurrently from other Python threads also sees one thread while the body runs. The
    previous count is restored on exit, also when the body raises.
    """
    threads = torch.get_num_threads()
    if threads == 1 or num_elements >= ONE_THREAD_BELOW or torch.compiler.is_compiling():
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _stacked_gradient(columns: list[Tensor | None], stats: Tensor, scale: float) -> Tensor:
    """``scale`` times the gradient with respect to ``stats`` from its columns' (``None``: zero)."""
    zero = stats.new_zeros(stats.shape[:-1])
    return torch.stack([zero if column is None else column for column in columns], dim=-1).mul_(scale)


def _columns(stats: Tensor, dim: int) -> tuple[Tensor, ...]:
    """Every column of a side's statistics, shaped ``(..., n, 1)`` (``dim=-1``, rows) or ``(..., 1, m)``
    (``dim=-2``, columns): two view operations for all layers instead of two per statistic."""
    if dim == -1:
        return stats.unsqueeze(-1).unbind(-2)
    return stats.unsqueeze(-3).unbind(-1)


def _block_shape(
    cov: Tensor,
    stats1: Tensor,
    stats2: Tensor,
    theta: Tensor | None,
    values: Sequence[Tensor | None],
) -> torch.Size:
    """The shape every matrix of the recursion has: all operands broadcast to it."""
    shapes = [v.shape for v in values if isinstance(v, Tensor) and (v.numel() > 1 or v.dim() > cov.dim())]
    if theta is not None:
        shapes.append(theta.shape)
    if not shapes and cov.dim() == stats1.dim() == stats2.dim() == 2:
        # (the common unbatched block, without broadcast_shapes' Python overhead)
        if cov.shape == (stats1.shape[0], stats2.shape[0]):
            return cov.shape
    shapes += [cov.shape, (*stats1.shape[:-1], 1), (*stats2.shape[:-2], 1, stats2.shape[-2])]
    return broadcast_shape(*shapes)


def _outer(left: Tensor, right: Tensor, out: Tensor) -> Tensor:
    """``left * right`` (``(..., n, 1)`` by ``(..., 1, m)``) written into ``out`` (the block's shape)."""
    if left.shape[:-2] == right.shape[:-2] == out.shape[:-2]:
        return torch.mul(left, right, out=out)
    return out.copy_(left * right)


def relu_family_layers(
    alpha: float,
    beta: float,
    cov: Tensor,
    stats1: Tensor,
    stats2: Tensor,
    ntk: Tensor | None,
    weights: Sequence[Tensor | None],
    biases: Sequence[Tensor | None],
    widths: Sequence[float] | None,
    compute_ntk: bool,
    symmetric: bool,
    zeros: tuple[tuple[bool, ...], tuple[bool, ...]],
    save: bool,
    order: int = 1,
) -> tuple[Tensor, Tensor | None, list]:
    """Forward pass; ``save``: keep what the backward pass needs (and overwrite nothing it needs).

    ``order``: 1 for the ReLU family's duals, 2 for the rectified square's (``beta`` 0).

    Every matrix is a ``workspace.matrix`` of the block's full shape, written by
    ``out=`` or in place: no matrix-sized allocation (and no page fault) in the steady state.
    The inputs ``cov`` and ``ntk`` are only read.
    """
    shape = _block_shape(cov, stats1, stats2, ntk, [*weights, *biases])
    saved = []
    scratch = matrix(shape, cov)
    one = cov.new_ones(())
    keep_sin = save and compute_ntk
    columns1, columns2 = _columns(stats1, -1), _columns(stats2, -2)
    for layer, (w, b) in enumerate(zip(weights, biases)):
        var1, std1, rstd1 = columns1[3 * layer : 3 * layer + 3]
        var2, std2, rstd2 = columns2[3 * layer : 3 * layer + 3]
        # the outer product of the reciprocal deviations first: k(X, X) stays exactly symmetric
        c = _outer(rstd1, rstd2, matrix(shape, cov)).mul_(cov)
        both_zero = None
        if zeros[0][layer] and zeros[1][layer]:
            both_zero = (var1 == 0) & (var2 == 0)
            c.masked_fill_(both_zero, 1.0)
        if symmetric:
            c.diagonal(dim1=-2, dim2=-1).fill_(1.0)
        clipped = None
        low, high = torch.aminmax(c)
        # (one reduction; the rounding beyond +-1 that the clamp removes is rare off the diagonal)
        if float(low) < -1.0 or float(high) > 1.0:
            clipped = c.gt(1.0).logical_or_(c.lt(-1.0)) if save else None
            c.clamp_(-1.0, 1.0)
        angle = torch.neg(c, out=matrix(shape, cov)).acos_()  # pi - theta = arccos(-c); negation is exact
        # sin(theta) = sqrt((1 - c)(1 + c)): no cancellation near c = +-1
        sin = torch.sub(one, c, out=matrix(shape, cov))
        sin.mul_(torch.add(c, 1.0, out=scratch)).sqrt_()
        if order == 2:
            q, q_dot = _square_duals(alpha, c, angle, sin, std1, std2, scratch, compute_ntk or save)
            # (the slope of q_dot in c is 4 alpha s1 s2 (pi - theta): the angle is what it keeps)
            sin = angle
        else:
            q = (
                torch.addcmul(sin, c, angle, out=matrix(shape, cov)) if keep_sin else sin.addcmul_(c, angle)
            )  # J_1
            q.mul_(alpha)
            if beta:
                q.add_(c, alpha=beta)
            q.mul_(_outer(std1, std2, scratch))
            q_dot = None
            if compute_ntk or save:
                q_dot = angle.mul_(alpha)
                if beta:
                    q_dot.add_(beta)
        tangent = None
        if compute_ntk and widths is not None and w is not None:
            tangent = torch.mul(q, widths[layer], out=matrix(shape, cov))
            if b is not None:
                tangent.add_(1.0)
        if w is None:  # the network ends at this activation (no read-out layer)
            cov_next = q
        elif b is None:
            cov_next = torch.mul(q, w, out=matrix(shape, cov))
        else:
            cov_next = torch.addcmul(b, w, q, out=matrix(shape, cov))
        ntk_prev = ntk
        if compute_ntk:
            ntk = torch.mul(q_dot, ntk, out=matrix(shape, cov))
            if w is not None:
                ntk.mul_(w).add_(cov_next if tangent is None else tangent)
        if save:
            saved.append((c, sin if keep_sin else None, q, q_dot, clipped, both_zero, ntk_prev))
        cov = cov_next
    return cov, ntk, saved


def _square_duals(
    alpha: float,
    c: Tensor,
    angle: Tensor,
    sin: Tensor,
    std1: Tensor,
    std2: Tensor,
    scratch: Tensor,
    derivative: bool,
) -> tuple[Tensor, Tensor | None]:
    """``q = alpha (s1 s2)^2 J_2(c)`` (in ``sin``'s memory) and ``q_dot = 4 alpha s1 s2 J_1(c)``."""
    j1 = torch.addcmul(sin, c, angle, out=matrix(c.shape, c)) if derivative else None
    # J_2 = 3 sin(theta) c + (pi - theta)(1 + 2 c^2)
    q = sin.mul_(c).mul_(3.0).addcmul_(angle, torch.mul(c, c, out=scratch).mul_(2.0).add_(1.0))
    product = _outer(std1, std2, scratch)
    q.mul_(alpha).mul_(product).mul_(product)
    return q, (None if j1 is None else j1.mul_(product).mul_(4.0 * alpha))


class _ReLUFamilyBlock(torch.autograd.Function):
    """``(nngp, ntk)`` of :func:`relu_family_recursion` with a hand-written backward pass."""

    @staticmethod
    def forward(ctx, spec, generic, cov, stats1, stats2, theta, *values):  # type: ignore[override]
        alpha, beta, num_layers, compute_ntk, symmetric, zeros, widths, order = spec
        weights, biases = values[:num_layers], values[num_layers:]
        ntk0 = (cov if theta is None else theta) if compute_ntk else None
        with one_thread(cov.numel()):
            nngp, ntk, saved = relu_family_layers(
                alpha,
                beta,
                cov,
                stats1,
                stats2,
                ntk0,
                weights,
                biases,
                widths,
                compute_ntk,
                symmetric,
                zeros,
                True,
                order,
            )
        ctx.set_materialize_grads(False)
        ctx.spec, ctx.generic, ctx.layers = spec, generic, saved
        ctx.nodes = gradient_nodes((cov, stats1, stats2, theta, *values))
        ctx.save_for_backward(cov, stats1, stats2, theta, *values)
        return nngp, ntk

    @staticmethod
    def backward(ctx, g_nngp, g_ntk):  # type: ignore[override]
        if torch.is_grad_enabled():
            return _ReLUFamilyBlock._differentiable_backward(ctx, g_nngp, g_ntk)
        with one_thread(ctx.layers[-1][2].numel()):
            return _ReLUFamilyBlock._backward(ctx, g_nngp, g_ntk)

    @staticmethod
    def _differentiable_backward(ctx, g_nngp, g_ntk):
        # create_graph=True (a second derivative follows): the hand-written pass uses saved
        # intermediates, whose dependence on the inputs autograd does not see, so recompute
        # the block with the generic recursion on the saved inputs and differentiate that
        cov, stats1, stats2, theta, *values = ctx.saved_tensors
        num_layers = ctx.spec[2]
        outputs = ctx.generic(cov, stats1, stats2, theta, values[:num_layers], values[num_layers:])
        pairs = [(o, g) for o, g in zip(outputs, (g_nngp, g_ntk)) if o is not None and g is not None]
        inputs = [cov, stats1, stats2, theta, *values]
        wanted = [i for i, t in enumerate(inputs) if t is not None and ctx.needs_input_grad[2 + i]]
        grads: list[Tensor | None] = [None] * len(inputs)
        if pairs and wanted:
            found = torch.autograd.grad(
                [o for o, _ in pairs],
                [inputs[i] for i in wanted],
                [g for _, g in pairs],
                create_graph=True,
                allow_unused=True,
            )
            for i, g in zip(wanted, found):
                grads[i] = g
        return (None, None, *grads)

    @staticmethod
    def _backward(ctx, g_nngp, g_ntk):
        cov0, stats1, stats2, theta, *values = ctx.saved_tensors
        # (only what this backward pass will use: an acquisition function's gradient wants the
        # candidates' side, not the training points' statistics or the variances)
        needs = wanted_gradients(ctx.nodes, ctx.needs_input_grad[2:])
        g_cov, grads1, grads2, g_theta, g_values = block_backward(
            ctx.spec, ctx.layers, cov0, stats1, stats2, theta, values, needs, g_nngp, g_ntk
        )
        unsnap = 1.0 / snap_factor(stats1.dtype)
        g_stats1 = None if grads1 is None else _stacked_gradient(grads1, stats1, unsnap)
        g_stats2 = None if grads2 is None else _stacked_gradient(grads2, stats2, unsnap)
        return (None, None, g_cov, g_stats1, g_stats2, g_theta, *g_values)


def block_backward(
    spec: tuple,
    layers: list,
    cov0: Tensor,
    stats1: Tensor,
    stats2: Tensor,
    theta: Tensor | None,
    values: Sequence[Tensor | None],
    needs: Sequence[bool],
    g_nngp: Tensor | None,
    g_ntk: Tensor | None,
) -> tuple:
    """The backward pass of the layers that ``relu_family_layers(..., save=True)`` saved as ``layers``.

    ``needs``: which of ``(cov, stats1, stats2, theta, *values)`` want a gradient. Returns
    ``(g_cov, grads1, grads2, g_theta, g_values)``; ``grads1``, ``grads2`` are the gradients of
    the statistics' columns (``None`` where zero or not wanted), each :func:`snap_factor` times
    its value (see the reciprocals below).
    """
    alpha, beta, num_layers, compute_ntk, symmetric, zeros, widths, order = spec
    weights, biases = values[:num_layers], values[num_layers:]
    want1, want2 = needs[1], needs[2]
    # the gradients of the statistics' columns, 3 per layer (the variance's stays 0)
    grads1 = [None] * stats1.shape[-1] if want1 else None
    grads2 = [None] * stats2.shape[-1] if want2 else None
    g_values: list[Tensor | None] = [None] * len(values)
    columns1, columns2 = _columns(stats1, -1), _columns(stats2, -2)
    # point_statistics' r = snap / s (both 0 at v = 0): 1 / s = r / snap and 1 / r = s / snap,
    # so the reciprocals are the other column, and the factor 1 / snap is applied once, at the end
    like = layers[-1][2]
    shape = like.shape
    if not compute_ntk:
        g_ntk = None
    # the incoming gradients are only read; own_*: the tensor is this pass's to overwrite
    g_cov, own_cov, own_ntk = g_nngp, False, False
    scratch, product = matrix(shape, like), matrix(shape, like)
    ntk_product = matrix(shape, like) if g_ntk is not None else None
    # the band of the singular slope 1/sin(theta) at c = +-1 (see gp_ntk's arccos_j)
    band = 4.0 * math.sqrt(torch.finfo(like.dtype).eps)
    for layer in reversed(range(num_layers)):
        c, sin, q, q_dot, clipped, both_zero, ntk_prev = layers[layer]
        w, b = weights[layer], biases[layer]
        var1, std1, rstd1 = columns1[3 * layer : 3 * layer + 3]
        var2, std2, rstd2 = columns2[3 * layer : 3 * layer + 3]
        # G: the gradient reaching this layer's covariance, which the NTK adds as its tangent
        G = g_cov
        if g_ntk is not None and widths is None and w is not None:
            if G is None:
                G, own_cov = g_ntk, False
            elif own_cov:
                G = G.add_(g_ntk)
            else:
                G, own_cov = torch.add(G, g_ntk, out=matrix(shape, like)), True
        if G is None:
            G, own_cov = torch.zeros(shape, dtype=like.dtype, device=like.device), True
        if b is not None and needs[4 + num_layers + layer]:
            g_values[num_layers + layer] = sum_to_shape(G.sum((-1, -2), keepdim=True), b.shape)
        Z = None if g_ntk is None else torch.mul(g_ntk, ntk_prev, out=ntk_product)
        # P = G q: the weight's gradient, and (times w) that of q's factor s1 s2
        wants_w = w is not None and needs[4 + layer]
        P = torch.mul(G, q, out=product) if want1 or want2 or wants_w else None
        row = col = None
        if want1 or want2:
            row = P.sum(-1, keepdim=True) if want1 else None
            col = P.sum(-2, keepdim=True) if want2 else None
        if wants_w:
            g_w = row.sum(-2, keepdim=True) if row is not None else P.sum((-1, -2), keepdim=True)
            if Z is not None:
                g_w = g_w + torch.mul(Z, q_dot, out=product).sum((-1, -2), keepdim=True)
            g_values[layer] = sum_to_shape(g_w, w.shape)
        if w is None:
            g_q = G if own_cov else torch.mul(G, 1.0, out=matrix(shape, like))
        else:
            g_q = G.mul_(w) if own_cov else torch.mul(G, w, out=matrix(shape, like))
            row = None if row is None else row * w
            col = None if col is None else col * w
        standard = g_ntk is not None and widths is not None and w is not None
        if standard:
            g_q.add_(g_ntk, alpha=widths[layer])
            if want1 or want2:
                extra = torch.mul(g_ntk, q, out=product)
                row = None if row is None else row + widths[layer] * extra.sum(-1, keepdim=True)
                col = None if col is None else col + widths[layer] * extra.sum(-2, keepdim=True)
        if Z is not None and w is not None:
            Z = Z.mul_(w)  # the gradient of q_dot
        if order == 2:
            # q = alpha (s1 s2)^2 J_2: d/ds1 = 2 q / s1; q_dot = 4 alpha s1 s2 J_1: d/ds1 = q_dot / s1
            row = None if row is None else row * 2.0
            col = None if col is None else col * 2.0
            if Z is not None and (want1 or want2):
                dot = torch.mul(Z, q_dot, out=product)
                row = None if row is None else row + dot.sum(-1, keepdim=True)
                col = None if col is None else col + dot.sum(-2, keepdim=True)
        # q = (alpha J_1 + beta c) s1 s2: d/ds1 = q / s1
        if want1:
            grads1[3 * layer + 1] = sum_to_shape(row * rstd1, std1.shape).squeeze(-1)
        if want2:
            grads2[3 * layer + 1] = sum_to_shape(col * rstd2, std2.shape).squeeze(-2)
        g_c = g_q.mul_(_outer(std1, std2, scratch)).mul_(q_dot)
        if Z is not None:
            if order == 2:
                # d q_dot / dc = 4 alpha s1 s2 (pi - theta), the angle saved in sin's place
                g_c.addcmul_(Z, torch.mul(sin, scratch, out=product), value=4.0 * alpha)
            else:
                inv_sin = torch.reciprocal(sin, out=scratch)
                if symmetric:
                    inv_sin.diagonal(dim1=-2, dim2=-1).fill_(0.0)
                if not float(inv_sin.max()) < 1.0 / band:
                    inv_sin.masked_fill_(~(sin > band), 0.0)
                g_c.addcmul_(Z, inv_sin, value=alpha)
            if own_ntk:
                g_ntk = g_ntk.mul_(q_dot)
            else:
                g_ntk, own_ntk = torch.mul(g_ntk, q_dot, out=matrix(shape, like)), True
            if w is not None:
                g_ntk.mul_(w)
        # the clamp, the exact unit diagonal and the zero-variance pairs pass no gradient
        if clipped is not None:
            g_c.masked_fill_(clipped, 0.0)
        if both_zero is not None:
            g_c.masked_fill_(both_zero, 0.0)
        if symmetric:
            g_c.diagonal(dim1=-2, dim2=-1).fill_(0.0)
        if want1 or want2:
            # c = cov r1 r2: d/dr1 = c / r1
            H = torch.mul(g_c, c, out=product)
            if want1:
                grads1[3 * layer + 2] = sum_to_shape(H.sum(-1, keepdim=True) * std1, rstd1.shape).squeeze(-1)
            if want2:
                grads2[3 * layer + 2] = sum_to_shape(H.sum(-2, keepdim=True) * std2, rstd2.shape).squeeze(-2)
        g_cov = g_c.mul_(_outer(rstd1, rstd2, scratch))
        own_cov = True
    g_theta = None
    if g_ntk is not None:
        if theta is not None:
            g_theta = sum_to_shape(g_ntk, theta.shape) if needs[3] else None
        else:
            g_cov = g_cov.add_(g_ntk)
    g_cov = sum_to_shape(g_cov, cov0.shape) if needs[0] else None
    return g_cov, grads1, grads2, g_theta, g_values


def relu_family_recursion(
    alpha: float,
    beta: float,
    cov: Tensor,
    stats1: Tensor,
    stats2: Tensor,
    weight_variances: Sequence[Tensor | None],
    bias_variances: Sequence[Tensor | None],
    compute_ntk: bool,
    symmetric: bool,
    zeros: tuple[tuple[bool, ...], tuple[bool, ...]],
    standard_ntk: tuple[Tensor, Sequence[float]] | None,
    generic,
    order: int = 1,
) -> tuple[Tensor, Tensor | None]:
    r"""The block recursion for duals ``q = s1 s2 (alpha J_1 + beta c)``, ``q_dot = alpha J_0 + beta``.

    ``stats1``, ``stats2`` are the rows' and columns' ``gp_ntk.recursion.point_statistics``, whose
    reciprocal deviation is :math:`r = (1 + 2\epsilon)/s` (0 where :math:`s = 0`): the backward pass
    takes :math:`1/s` and :math:`1/r` from that relation. ``generic(cov, stats1, stats2, theta,
    weights, biases)`` is the same recursion by plain differentiable operations, used for second
    derivatives. ``order=2``: the rectified square's duals instead (``alpha`` :math:`1/2\pi`,
    ``beta`` 0).
    """
    weights = list(weight_variances)
    biases = list(bias_variances)
    theta = None if standard_ntk is None else standard_ntk[0]
    widths = None if standard_ntk is None else tuple(standard_ntk[1])
    values = [*weights, *biases]
    tensors = (cov, stats1, stats2, theta, *values)
    if torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in tensors):
        spec = (alpha, beta, len(weights), compute_ntk, symmetric, zeros, widths, order)
        return _ReLUFamilyBlock.apply(spec, generic, cov, stats1, stats2, theta, *values)
    ntk0 = (cov if theta is None else theta) if compute_ntk else None
    with one_thread(cov.numel()):
        nngp, ntk, _ = relu_family_layers(
            alpha,
            beta,
            cov,
            stats1,
            stats2,
            ntk0,
            weights,
            biases,
            widths,
            compute_ntk,
            symmetric,
            zeros,
            False,
            order,
        )
    return nngp, ntk
