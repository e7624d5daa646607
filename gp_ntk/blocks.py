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

A block function ``f(x1, x2, diag)`` returns a tuple of tensors: ``(..., n, m)`` matrices, or
``(..., n)`` diagonals with ``diag=True`` (then ``x1`` is ``x2``). It must use only the tensors
it is given, so that gradients reach them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

__all__ = ["BlockFunction", "DenseKernel", "dense", "gradients", "matmul", "row_blocks"]

BlockFunction = Callable[[Tensor, Tensor, bool], tuple[Tensor, ...]]
BlockLoss = Callable[[int, int, tuple[Tensor, ...], tuple[Tensor, ...] | None], Tensor | None]


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
    f: BlockFunction, x1: Tensor, x2: Tensor, symmetric: bool, block_elements: int
) -> Iterator[tuple[int, int, tuple[Tensor, ...] | None, tuple[Tensor, ...] | None]]:
    """Yield ``(start, stop, square, rest)`` for each row block ``R = start:stop``.

    Symmetric (``x2`` is ignored, columns are ``x1``'s): ``square = f(x1[R], x1[R])`` and
    ``rest = f(x1[R], x1[stop:])`` (``None`` for the last block). Otherwise ``square`` is
    ``None`` and ``rest = f(x1[R], x2)``.
    """
    num_rows = x1.shape[-2]
    num_cols = num_rows if symmetric else x2.shape[-2]
    for start, stop in row_ranges(num_rows, num_cols, symmetric, block_elements):
        rows = x1[..., start:stop, :]
        if not symmetric:
            yield start, stop, None, f(rows, x2, False)
            continue
        square = f(rows, rows, False)
        rest = f(rows, x1[..., stop:, :], False) if stop < num_rows else None
        yield start, stop, square, rest


def dense(
    f: BlockFunction, x1: Tensor, x2: Tensor, symmetric: bool, block_elements: int
) -> tuple[Tensor, ...]:
    """The whole matrices ``f(x1, x2)``, assembled from row blocks (no autograd graph is kept
    across blocks; use :class:`DenseKernel` for a differentiable result)."""
    num_rows = x1.shape[-2]
    num_cols = num_rows if symmetric else x2.shape[-2]
    outputs: list[Tensor] | None = None
    for start, stop, square, rest in row_blocks(f, x1, x2, symmetric, block_elements):
        first = square if square is not None else rest
        if outputs is None:
            outputs = [
                torch.empty(*block.shape[:-2], num_rows, num_cols, dtype=block.dtype, device=block.device)
                for block in first
            ]
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


def matmul(
    f: BlockFunction, x1: Tensor, x2: Tensor, symmetric: bool, rhs: Tensor, block_elements: int
) -> Tensor:
    """:math:`K \\cdot \\text{rhs}` for the first output :math:`K` of ``f``, ``rhs`` ``(..., M, t)``."""
    result: Tensor | None = None
    for start, stop, square, rest in row_blocks(f, x1, x2, symmetric, block_elements):
        if square is None:
            part = rest[0] @ rhs
            if result is None:
                result = part.new_empty(*part.shape[:-2], x1.shape[-2], part.shape[-1])
            result[..., start:stop, :] = part
            continue
        part = square[0] @ rhs[..., start:stop, :]
        if result is None:
            result = part.new_zeros(*part.shape[:-2], x1.shape[-2], part.shape[-1])
        if rest is not None:
            part = part + rest[0] @ rhs[..., stop:, :]
            result[..., stop:, :] += rest[0].mT @ rhs[..., start:stop, :]
        result[..., start:stop, :] += part
    assert result is not None, "a kernel matrix needs at least one row"
    return result


def gradients(
    f: BlockFunction,
    x1: Tensor,
    x2: Tensor,
    symmetric: bool,
    block_loss: BlockLoss,
    targets: Sequence[Tensor],
    block_elements: int,
) -> list[Tensor | None]:
    """Gradients w.r.t. ``targets`` of :math:`\\sum_\\text{blocks}` ``block_loss(start, stop, square, rest)``.

    ``f`` must be built on ``targets`` (leaves that require grad). Each block is evaluated with
    autograd, differentiated and released before the next.
    """
    grads: list[Tensor | None] = [None] * len(targets)
    with torch.enable_grad():
        for start, stop, square, rest in row_blocks(f, x1, x2, symmetric, block_elements):
            loss = block_loss(start, stop, square, rest)
            if loss is None or not loss.requires_grad:
                continue
            block_grads = torch.autograd.grad(loss, targets, allow_unused=True)
            for i, grad in enumerate(block_grads):
                if grad is not None:
                    grads[i] = grad if grads[i] is None else grads[i] + grad
    return grads


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

    ``DenseKernel.apply(evaluate, names, symmetric, block_elements, x1, x2, *values)`` returns
    the tuple ``evaluate(x1, x2, False, **dict(zip(names, values)))`` would, evaluated block by
    block. The forward pass keeps no graph; the backward pass re-evaluates each block with
    autograd and contracts it with the incoming gradient, so memory is the result plus one
    block's graph. First derivatives only: a backward pass with ``create_graph=True`` raises.
    """

    @staticmethod
    def forward(ctx, evaluate, names, symmetric, block_elements, x1, x2, *values):  # type: ignore[override]
        params = dict(zip(names, values))

        def f(a: Tensor, b: Tensor, diag: bool) -> tuple[Tensor, ...]:
            return evaluate(a, b, diag, **params)

        with torch.no_grad():
            outputs = dense(f, x1, x2, symmetric, block_elements)
        ctx.evaluate, ctx.names, ctx.symmetric, ctx.block_elements = (
            evaluate,
            names,
            symmetric,
            block_elements,
        )
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
        return _recomputed_backward(ctx, grad_outputs)


def _recomputed_backward(ctx, grad_outputs) -> tuple[Tensor | None, ...]:
    x1, x2, *values = ctx.saved_tensors
    needs = ctx.needs_input_grad[4:]
    # symmetric: one leaf stands for both arguments, and its gradient is returned for x1
    leaf1 = x1.detach().requires_grad_(needs[0] or (ctx.symmetric and needs[1]))
    leaf2 = leaf1 if ctx.symmetric else x2.detach().requires_grad_(needs[1])
    value_leaves = [v.detach().requires_grad_(need) for v, need in zip(values, needs[2:])]
    params = dict(zip(ctx.names, value_leaves))

    def f(a: Tensor, b: Tensor, diag: bool) -> tuple[Tensor, ...]:
        return ctx.evaluate(a, b, diag, **params)

    candidates = [leaf1, None if ctx.symmetric else leaf2, *value_leaves]
    targets = [t for t in candidates if t is not None and t.requires_grad]
    found = gradients(
        f, leaf1, leaf2, ctx.symmetric, _pairing_loss(grad_outputs), targets, ctx.block_elements
    )
    by_target = {id(t): g for t, g in zip(targets, found)}
    result = [by_target.get(id(t)) if t is not None else None for t in candidates]
    return (None, None, None, None, *result)
