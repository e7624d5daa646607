r"""Kernel matrices evaluated in blocks of rows: dense results, products and gradients.

Each layer of a deep kernel is a matrix-product term and a dozen elementwise maps. Applied to
whole N x M temporaries, every map is a round trip through main memory into a freshly
allocated (and page-faulted) buffer, and that traffic, not the arithmetic, is what the
evaluation costs. Applied to a few hundred thousand entries at a time, the temporaries stay
in cache and the allocator recycles them: the same eager operations run several times
faster. This module walks a kernel matrix in such row blocks and gives

* :func:`dense`: the whole matrix (or several matrices from one pass, e.g. NNGP and NTK);
* :func:`matmul`: :math:`K V` without ever holding :math:`K`;
* :func:`gradients`: gradients of a sum over blocks (:math:`\langle G, K\rangle` for a dense
  backward pass, :math:`u^\top K v` for linear_operator's bilinear derivative), each block's
  autograd graph built, used and freed before the next, so memory stays O(block);
* :class:`DenseKernel`: an autograd function that evaluates the whole matrix blockwise
  without a graph and recomputes each block in its backward pass (block-level
  checkpointing), so a differentiable dense kernel costs no more memory than its result.

For :math:`k(X, X)` only the blocks on and above the diagonal are evaluated: the square
:math:`K_{RR}` of each row block through the kernel's symmetric path (exactly symmetric, with
the correlation of a point with itself exactly 1) and the rectangle :math:`K_{R,>}` to its
right, which is also written, transposed, below the diagonal. That halves the work and makes
the result exactly symmetric.

Each side of the matrix is a :class:`Side`: the points and their per-point statistics (the
variances of every layer, computed once in O(n) for the whole side and sliced with the rows),
so that a block costs only its own n x m work. A block function ``f(side1, side2)`` returns a
tuple of ``(..., n, m)`` matrices; ``side1 is side2`` marks a symmetric square. It must use
only the tensors it is given, so that gradients reach them.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["BlockFunction", "DenseKernel", "Side", "dense", "gradients", "matmul", "row_blocks", "row_ranges"]


class Side(NamedTuple):
    """The points of one side of a kernel matrix and their per-point statistics."""

    #: ``(..., n, d)`` inputs
    points: Tensor
    #: ``(..., n, k)`` per-point statistics (sliced with the points)
    stats: Tensor
    #: per layer, whether any variance of the whole side is 0 (a static fact of the side, so
    #: that blocks need no device synchronisation to choose their path)
    zeros: tuple[bool, ...]
    #: ``(..., n)`` integer powers of two that ``points`` were divided by (rescaled inputs of a
    #: homogeneous kernel), or ``None``
    exponents: Tensor | None = None
    #: where no two points of the side share a first-layer variance, an object shared by the
    #: side and its row slices: two sides of one ``group`` cannot hold one point twice
    group: object | None = None

    def rows(self, start: int, stop: int) -> Side:
        exponents = None if self.exponents is None else self.exponents[..., start:stop]
        points, stats = self.points[..., start:stop, :], self.stats[..., start:stop, :]
        return Side(points, stats, self.zeros, exponents, self.group)

    @property
    def num_points(self) -> int:
        return self.points.shape[-2]


BlockFunction = Callable[[Side, Side], tuple[Tensor, ...]]
Statistics = Callable[[Tensor], Side]
BlockLoss = Callable[[int, int, tuple[Tensor, ...] | None, tuple[Tensor, ...] | None], Tensor | None]


def row_ranges(num_rows: int, num_cols: int, symmetric: bool, block_elements: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of about ``block_elements`` entries each.

    For a symmetric matrix the block starting at row ``s`` spans columns ``s:``, so later blocks
    take more rows.
    """
    ranges, start = [], 0
    while start < num_rows:
        width = max(num_cols - start if symmetric else num_cols, 1)
        stop = min(num_rows, start + max(1, block_elements // width))
        ranges.append((start, stop))
        start = stop
    return ranges


def row_blocks(
    f: BlockFunction, side1: Side, side2: Side, symmetric: bool, block_elements: int
) -> Iterator[tuple[int, int, tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]]:
    """Yield ``(start, stop, square, rest)`` for each row block ``R = start:stop``.

    Symmetric (``side2`` is ignored, columns are ``side1``'s): ``square = f(R, R)`` with one
    and the same :class:`Side` as both arguments, and ``rest = f(R, side1[stop:])`` (``None``
    for the last block). Otherwise ``square`` is ``None`` and ``rest = f(R, side2)``.
    """
    num_rows = side1.num_points
    num_cols = num_rows if symmetric else side2.num_points
    for start, stop in row_ranges(num_rows, num_cols, symmetric, block_elements):
        rows = side1.rows(start, stop)
        if not symmetric:
            yield start, stop, None, f(rows, side2)
            continue
        square = f(rows, rows)
        rest = f(rows, side1.rows(stop, num_rows)) if stop < num_rows else None
        yield start, stop, square, rest


def dense(
    f: BlockFunction, side1: Side, side2: Side, symmetric: bool, block_elements: int
) -> tuple[Tensor, ...]:
    """The whole matrices ``f(side1, side2)``, assembled from row blocks (no autograd graph is
    kept across blocks; use :class:`DenseKernel` for a differentiable result)."""
    num_rows = side1.num_points
    num_cols = num_rows if symmetric else side2.num_points
    outputs: list[Tensor] | None = None
    for start, stop, square, rest in row_blocks(f, side1, side2, symmetric, block_elements):
        first = square if square is not None else rest
        if outputs is None:
            outputs = [_new_matrix((*block.shape[:-2], num_rows, num_cols), block) for block in first]
        for index, out in enumerate(outputs):
            if square is None:
                out[..., start:stop, :] = rest[index]
                continue
            out[..., start:stop, start:stop] = square[index]
            if rest is not None:
                out[..., start:stop, stop:] = rest[index]
                out[..., stop:, start:stop] = rest[index].mT
    assert outputs is not None, "a kernel matrix needs at least one row"
    return tuple(outputs)


_HUGE_PAGE = 2**21
_MADV_HUGEPAGE = 14  # Linux


@functools.cache
def _madvise():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def _new_matrix(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised output matrix; large CPU ones are backed by transparent huge pages.

    Writing a fresh N x N result faults in every 4 KiB page, and on a CPU that costs as much as
    computing a deep kernel's layer (measured: 58 ms to first-touch 128 MB, 14 ms with 2 MiB
    pages). Where Linux allows huge pages on request (``madvise`` mode), the buffer asks for
    them before it is touched; elsewhere nothing changes.
    """
    out = torch.empty(shape, dtype=like.dtype, device=like.device)
    size = out.numel() * out.element_size()
    if out.device.type != "cpu" or size < 4 * _HUGE_PAGE or sys.platform != "linux":
        return out
    madvise = _madvise()
    if madvise is not None:
        start = -(-out.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
        end = (out.data_ptr() + size) // _HUGE_PAGE * _HUGE_PAGE
        if end > start:
            madvise(start, end - start, _MADV_HUGEPAGE)  # advice only: a refusal changes nothing
    return out


def matmul(
    f: BlockFunction, side1: Side, side2: Side, symmetric: bool, rhs: Tensor, block_elements: int
) -> Tensor:
    """:math:`K \\cdot \\text{rhs}` for the first output :math:`K` of ``f``, ``rhs`` ``(..., M, t)``."""
    result: Tensor | None = None
    for start, stop, square, rest in row_blocks(f, side1, side2, symmetric, block_elements):
        if square is None:
            part = rest[0] @ rhs
            if result is None:
                result = part.new_empty(*part.shape[:-2], side1.num_points, part.shape[-1])
            result[..., start:stop, :] = part
            continue
        part = square[0] @ rhs[..., start:stop, :]
        if result is None:
            result = part.new_zeros(*part.shape[:-2], side1.num_points, part.shape[-1])
        if rest is not None:
            part = part + rest[0] @ rhs[..., stop:, :]
            result[..., stop:, :] += rest[0].mT @ rhs[..., start:stop, :]
        result[..., start:stop, :] += part
    assert result is not None, "a kernel matrix needs at least one row"
    return result


def gradients(
    statistics: Statistics,
    f: BlockFunction,
    x1: Tensor,
    x2: Tensor,
    symmetric: bool,
    block_loss: BlockLoss,
    targets: Sequence[Tensor],
    block_elements: int,
) -> list[Tensor | None]:
    """Gradients w.r.t. ``targets`` of :math:`\\sum_\\text{blocks}` ``block_loss(start, stop, square, rest)``.

    ``statistics`` and ``f`` must be built on ``targets`` (leaves that require grad; ``x1`` and
    ``x2`` among them where their gradients are wanted). The statistics of each side are
    computed once with autograd; the block loop treats them as leaves, each block's graph is
    built, differentiated and released before the next, and the statistics' accumulated
    gradient is propagated to ``targets`` at the end.
    """
    with torch.enable_grad():
        side1 = statistics(x1)
        side2 = side1 if symmetric else statistics(x2)
    stats = [side1.stats] if symmetric else [side1.stats, side2.stats]
    stat_leaves = [s.detach().requires_grad_(s.requires_grad) for s in stats]
    leaf_side1 = side1._replace(stats=stat_leaves[0])
    leaf_side2 = leaf_side1 if symmetric else side2._replace(stats=stat_leaves[1])
    wanted = [*targets, *(s for s in stat_leaves if s.requires_grad)]
    grads: list[Tensor | None] = [None] * len(wanted)
    with torch.enable_grad():
        for start, stop, square, rest in row_blocks(f, leaf_side1, leaf_side2, symmetric, block_elements):
            loss = block_loss(start, stop, square, rest)
            if loss is None or not loss.requires_grad:
                continue
            for i, grad in enumerate(torch.autograd.grad(loss, wanted, allow_unused=True)):
                if grad is not None:
                    grads[i] = grad if grads[i] is None else grads[i] + grad
    found, stat_grads = grads[: len(targets)], grads[len(targets) :]
    through = [(s, g) for s, g in zip((s for s in stats if s.requires_grad), stat_grads) if g is not None]
    if through:
        with torch.enable_grad():
            back = torch.autograd.grad(
                [s for s, _ in through], list(targets), [g for _, g in through], allow_unused=True
            )
        found = [g if b is None else (b if g is None else g + b) for g, b in zip(found, back)]
    return found


def _pairing_loss(grad_outputs: Sequence[Tensor | None]) -> BlockLoss:
    # <G, K> restricted to one block; above-diagonal rectangles also stand below the diagonal
    def loss(start: int, stop: int, square, rest) -> Tensor | None:
        total = None
        for index, grad in enumerate(grad_outputs):
            if grad is None:
                continue
            if square is None:
                term = (rest[index] * grad[..., start:stop, :]).sum()
            else:
                term = (square[index] * grad[..., start:stop, start:stop]).sum()
                if rest is not None:
                    mirrored = grad[..., start:stop, stop:] + grad[..., stop:, start:stop].mT
                    term = term + (rest[index] * mirrored).sum()
            total = term if total is None else total + term
        return total

    return loss


class DenseKernel(torch.autograd.Function):
    """Dense kernel matrices from row blocks, with a blockwise recomputing backward pass.

    ``DenseKernel.apply(evaluate, statistics, names, symmetric, block_elements, x1, x2, *values)``
    returns the tuple of matrices ``evaluate(side1, side2, **params)`` gives for the whole
    sides ``statistics(x, **params)`` (``params = dict(zip(names, values))``), evaluated block
    by block. The forward pass keeps no graph; the backward pass re-evaluates each block with
    autograd and contracts it with the incoming gradient, so memory is the result plus one
    block's graph. First derivatives only: a backward pass with ``create_graph=True`` raises.
    """

    @staticmethod
    def forward(ctx, evaluate, statistics, names, symmetric, block_elements, x1, x2, *values):  # type: ignore[override]
        params = dict(zip(names, values))
        with torch.no_grad():
            side1 = statistics(x1, **params)
            side2 = side1 if symmetric else statistics(x2, **params)
            outputs = dense(lambda a, b: evaluate(a, b, **params), side1, side2, symmetric, block_elements)
        ctx.evaluate, ctx.statistics, ctx.names = evaluate, statistics, names
        ctx.symmetric, ctx.block_elements = symmetric, block_elements
        ctx.save_for_backward(x1, x2, *values)
        return outputs

    @staticmethod
    def backward(ctx, *grad_outputs):  # type: ignore[override]
        if torch.is_grad_enabled():  # create_graph=True: a second derivative is coming
            raise RuntimeError(
                "gp_ntk evaluates kernel matrices with at least "
                "gp_ntk.settings.block_evaluation's min_elements entries in row blocks, which are "
                "differentiable once; for higher derivatives evaluate in one piece, e.g. inside "
                "gp_ntk.settings.block_evaluation(min_elements=10**12)"
            )
        x1, x2, *values = ctx.saved_tensors
        needs = ctx.needs_input_grad[5:]
        # symmetric: one leaf stands for both arguments, and its gradient is returned for x1
        leaf1 = x1.detach().requires_grad_(needs[0] or (ctx.symmetric and needs[1]))
        leaf2 = leaf1 if ctx.symmetric else x2.detach().requires_grad_(needs[1])
        value_leaves = [v.detach().requires_grad_(need) for v, need in zip(values, needs[2:])]
        params = dict(zip(ctx.names, value_leaves))
        candidates = [leaf1, None if ctx.symmetric else leaf2, *value_leaves]
        targets = [t for t in candidates if t is not None and t.requires_grad]
        found = gradients(
            lambda x: ctx.statistics(x, **params),
            lambda a, b: ctx.evaluate(a, b, **params),
            leaf1,
            leaf2,
            ctx.symmetric,
            _pairing_loss(grad_outputs),
            targets,
            ctx.block_elements,
        )
        by_target = {id(t): g for t, g in zip(targets, found)}
        result = [by_target.get(id(t)) if t is not None else None for t in candidates]
        return (None, None, None, None, None, *result)
