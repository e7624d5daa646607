"""A kernel matrix that is never materialised: products and gradients in row blocks.

linear_operator's :class:`~linear_operator.operators.KernelLinearOperator` represents a
kernel matrix by its inputs and hyperparameters, but its matrix product (and so every CG
iteration) builds the whole N x M matrix. :class:`BlockedKernelLinearOperator` keeps the
representation and the indexing of that class and replaces the parts that touch all
entries with loops over blocks of rows (:mod:`gp_ntk.engine.blocks`), so memory stays
O((N + M) d + block) for

* ``_matmul`` (CG, Lanczos, predictive means): ``K @ v`` block by block;
* ``_bilinear_derivative`` (gradients of the marginal likelihood w.r.t. hyperparameters and
  inputs): each block is recomputed with autograd and released before the next;
* ``_diagonal``: O(N) through the kernel's own ``diag=True`` path.

A symmetric operator (``x1`` equal to ``x2``) evaluates only the blocks on and above the
diagonal, each diagonal square through the kernel's symmetric path, so its entries agree with
the dense ``k(X, X)`` (where the correlation of a point with itself is exactly 1). Input
gradients of a symmetric operator are attributed to ``x1``; where ``x1`` and ``x2`` are copies
of one tensor (as GPyTorch passes them) their sum is what matters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from linear_operator import to_dense
from linear_operator.operators import KernelLinearOperator
from linear_operator.utils.memoize import cached
from torch import Tensor

from .. import settings
from . import blocks

__all__ = ["BlockedKernelLinearOperator"]


class BlockedKernelLinearOperator(KernelLinearOperator):
    """:class:`~linear_operator.operators.KernelLinearOperator` evaluated in blocks of rows.

    Args:
        x1: ``(*batch, N, d)``.
        x2: ``(*batch, M, d)``.
        covar_func: ``covar_func(x1, x2, diag=False, **params)`` returning ``k(x1, x2)`` in one
            piece (or its diagonal with ``diag=True``), with two methods for the blocked
            products: ``side(x, **params)`` (a :class:`gp_ntk.engine.blocks.Side`: the points with
            their per-point statistics) and ``block(side1, side2, compiled, **params)`` (one
            block; ``compiled`` asks for the ``torch.compile`` path, see
            :class:`gp_ntk.settings.compile_kernels`). It must use only the tensors it is
            given, never a module's parameters, so that gradients reach ``params``.
        num_nonbatch_dimensions: as for ``KernelLinearOperator``.
        **params: hyperparameter tensors with leading batch dimensions.

    Blocks hold about ``gp_ntk.settings.lazy_evaluation``'s ``block_elements`` entries.
    """

    def __init__(
        self,
        x1: Tensor,
        x2: Tensor,
        covar_func: Callable[..., Tensor],
        num_outputs_per_input: tuple[int, int] = (1, 1),
        num_nonbatch_dimensions: dict[str, int] | None = None,
        **params,
    ) -> None:
        if tuple(num_outputs_per_input) != (1, 1):
            raise ValueError("BlockedKernelLinearOperator supports one output per input")
        super().__init__(
            x1,
            x2,
            covar_func=covar_func,
            num_outputs_per_input=(1, 1),
            num_nonbatch_dimensions=num_nonbatch_dimensions,
            **params,
        )

    # ------------------------------------------------------------------ helpers

    def _is_symmetric(self) -> bool:
        # O(N d), negligible next to any product with the O(N M d) matrix
        x1, x2 = self.x1, self.x2
        return x1 is x2 or (x1.shape == x2.shape and bool(torch.equal(x1, x2)))

    def _block_elements(self) -> int:
        return settings.lazy_evaluation.block_elements_for(self.x1.device)

    def _compiled(self) -> bool:
        rows, cols = self.x1.shape[-2], self.x2.shape[-2]
        return settings.compile_kernels.applies(rows * cols * max(1, self.batch_shape.numel()))

    def _all_params(self) -> dict:
        return {**self.tensor_params, **self.nontensor_params}

    def _sides(self, params: dict, symmetric: bool) -> tuple[blocks.Side, blocks.Side]:
        side1 = self.covar_func.side(self.x1, **params)
        return side1, (side1 if symmetric else self.covar_func.side(self.x2, **params))

    def _block_function(self, params: dict, compiled: bool = False) -> blocks.BlockFunction:
        block = self.covar_func.block

        def f(side1: blocks.Side, side2: blocks.Side) -> tuple[Tensor]:
            return (block(side1, side2, compiled, **params),)

        return f

    # ------------------------------------------------------------------ LinearOperator API

    @cached(name="kernel_diag")
    def _diagonal(self) -> Tensor:
        x2 = self.x1 if self._is_symmetric() else self.x2
        return self.covar_func(self.x1, x2, diag=True, **self._all_params())

    @property
    @cached(name="covar_mat")
    def covar_mat(self) -> Tensor:
        # Where a dense matrix is asked for (Cholesky), build it as the dense kernel would: from
        # row blocks, differentiable through a blockwise recomputing backward pass.
        symmetric = self._is_symmetric()
        nontensor = self.nontensor_params
        side, block = self.covar_func.side, self.covar_func.block
        compiled = self._compiled()

        def evaluate(side1: blocks.Side, side2: blocks.Side, **tensors: Tensor) -> tuple[Tensor]:
            return (block(side1, side2, compiled, **tensors, **nontensor),)

        def statistics(x: Tensor, **tensors: Tensor) -> blocks.Side:
            return side(x, **tensors, **nontensor)

        (matrix,) = blocks.DenseKernel.apply(
            evaluate,
            statistics,
            tuple(self.tensor_params),
            symmetric,
            self._block_elements(),
            self.x1,
            self.x1 if symmetric else self.x2,
            *self.tensor_params.values(),
        )
        return matrix

    def to_dense(self) -> Tensor:
        return to_dense(self.covar_mat)

    def _matmul(self, rhs: Tensor) -> Tensor:
        vector = rhs.dim() == 1
        if vector:
            rhs = rhs.unsqueeze(-1)
        params = self._all_params()
        symmetric = self._is_symmetric()
        side1, side2 = self._sides(params, symmetric)
        f = self._block_function(params, self._compiled())
        result = blocks.matmul(f, side1, side2, symmetric, rhs, self._block_elements())
        return result.squeeze(-1) if vector else result

    def _bilinear_derivative(self, left_vecs: Tensor, right_vecs: Tensor) -> tuple[Tensor | None, ...]:
        # The default implementation differentiates one _matmul through autograd and would keep
        # every block alive for the backward pass: O(N M) memory. Here each block's graph is
        # built, differentiated and dropped before the next.
        args = [
            arg.detach().requires_grad_(True)
            if arg.dtype.is_floating_point and arg.requires_grad
            else arg.detach()
            for arg in self.representation()
        ]
        wanted = [i for i, arg in enumerate(args) if arg.requires_grad]
        if not wanted:
            return (None,) * len(args)
        if left_vecs.dim() == 1:
            left_vecs, right_vecs = left_vecs.unsqueeze(-1), right_vecs.unsqueeze(-1)
        with torch.enable_grad():
            # rebuilt under grad mode: with batch dimensions the constructor expands its
            # arguments, and those views must stay connected to ``args``
            operator = self.representation_tree()(*args)
        symmetric = operator._is_symmetric()
        params = operator._all_params()
        side = operator.covar_func.side

        def block_loss(start: int, stop: int, square, rest) -> Tensor:
            # u^T K v over the entries this block stands for (above-diagonal rectangles of a
            # symmetric matrix also stand, transposed, below the diagonal)
            if square is None:
                return (left_vecs[..., start:stop, :] * (rest[0] @ right_vecs)).sum()
            loss = (left_vecs[..., start:stop, :] * (square[0] @ right_vecs[..., start:stop, :])).sum()
            if rest is not None:
                loss = loss + (left_vecs[..., start:stop, :] * (rest[0] @ right_vecs[..., stop:, :])).sum()
                loss = loss + (left_vecs[..., stop:, :] * (rest[0].mT @ right_vecs[..., start:stop, :])).sum()
            return loss

        targets = [args[i] for i in wanted]
        found = blocks.gradients(
            lambda x: side(x, **params),
            operator._block_function(params, operator._compiled()),
            operator.x1,
            operator.x2,
            symmetric,
            block_loss,
            targets,
            operator._block_elements(),
        )
        grads: list[Tensor | None] = [None] * len(args)
        for i, grad in zip(wanted, found):
            grads[i] = grad
        return tuple(
            torch.zeros_like(arg) if arg.requires_grad and grad is None else grad
            for arg, grad in zip(args, grads)
        )
