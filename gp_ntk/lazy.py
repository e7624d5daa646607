"""A kernel matrix that is never materialised: products and gradients in row blocks.

linear_operator's :class:`~linear_operator.operators.KernelLinearOperator` represents a
kernel matrix by its inputs and hyperparameters, but its matrix product (and so every CG
iteration) builds the whole N x M matrix. :class:`BlockedKernelLinearOperator` keeps the
representation and the indexing of that class and replaces the parts that touch all
entries with loops over blocks of rows, so memory stays O((N + M) d + block) for

* ``_matmul`` (CG, Lanczos, predictive means): ``K @ v`` block by block;
* ``_bilinear_derivative`` (gradients of the marginal likelihood w.r.t. hyperparameters and
  inputs): each block is recomputed with autograd and released before the next;
* ``_diagonal``: O(N) through the kernel's own ``diag=True`` path.

A symmetric operator (``x1`` equal to ``x2``) writes the exact diagonal into every block,
so its entries agree with the dense ``k(X, X)`` (where the correlation of a point with itself is
exactly 1) and not only to the ``sqrt(eps)`` that a cross-evaluated ``arccos`` near 1 gives.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from linear_operator.operators import KernelLinearOperator
from linear_operator.operators._linear_operator import to_dense
from linear_operator.utils.memoize import cached
from torch import Tensor

from . import settings

__all__ = ["BlockedKernelLinearOperator"]


class BlockedKernelLinearOperator(KernelLinearOperator):
    """:class:`~linear_operator.operators.KernelLinearOperator` evaluated in blocks of rows.

    Args:
        x1: ``(*batch, N, d)``.
        x2: ``(*batch, M, d)``.
        covar_func: ``covar_func(x1, x2, diag=False, compiled=False, **params)`` returning the
            dense block ``k(x1, x2)`` (or its diagonal with ``diag=True``; ``compiled`` asks for
            the ``torch.compile`` path, see :class:`gp_ntk.settings.compile_kernels`); it must use
            only the tensors it is given, never a module's parameters, so that gradients reach
            ``params``.
        num_nonbatch_dimensions: as for ``KernelLinearOperator``.
        **params: hyperparameter tensors with leading batch dimensions.

    The block height is ``gp_ntk.settings.lazy_evaluation``'s ``block_elements // M`` rows.
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

    def _row_blocks(self) -> list[tuple[int, int]]:
        rows, cols = self.x1.shape[-2], self.x2.shape[-2]
        step = settings.lazy_evaluation.block_rows(cols)
        return [(start, min(start + step, rows)) for start in range(0, rows, step)]

    def _compiled(self) -> bool:
        rows, cols = self.x1.shape[-2], self.x2.shape[-2]
        return settings.compile_kernels.applies(rows * cols * max(1, self.batch_shape.numel()))

    @staticmethod
    def _block(
        covar_func: Callable[..., Tensor],
        x1: Tensor,
        x2: Tensor,
        params: dict,
        start: int,
        stop: int,
        symmetric: bool,
        compiled: bool = False,
    ) -> Tensor:
        """Rows ``start:stop`` of ``k(x1, x2)``; when symmetric, with the exact diagonal."""
        rows = x1[..., start:stop, :]
        block = covar_func(rows, x2, compiled=compiled, **params)
        if not symmetric:
            return block
        # out of place, so that autograd sees K_ii come from the kernel's diag path
        diagonal = covar_func(rows, rows, diag=True, **params)
        columns = torch.diagonal_scatter(block[..., :, start:stop], diagonal, dim1=-2, dim2=-1)
        return torch.cat([block[..., :, :start], columns, block[..., :, stop:]], dim=-1)

    # ------------------------------------------------------------------ LinearOperator API

    @cached(name="kernel_diag")
    def _diagonal(self) -> Tensor:
        x2 = self.x1 if self._is_symmetric() else self.x2
        return self.covar_func(self.x1, x2, diag=True, **self._all_params())

    def _all_params(self) -> dict:
        return {**self.tensor_params, **self.nontensor_params}

    @property
    @cached(name="covar_mat")
    def covar_mat(self) -> Tensor:
        # where a dense matrix is asked for (Cholesky), build it as the dense kernel would
        x2 = self.x1 if self._is_symmetric() else self.x2
        return self.covar_func(self.x1, x2, **self._all_params())

    def to_dense(self) -> Tensor:
        return to_dense(self.covar_mat)

    def _matmul(self, rhs: Tensor) -> Tensor:
        vector = rhs.dim() == 1
        if vector:
            rhs = rhs.unsqueeze(-1)
        params = self._all_params()
        symmetric = self._is_symmetric()
        compiled = self._compiled()
        products = [
            self._block(self.covar_func, self.x1, self.x2, params, start, stop, symmetric, compiled) @ rhs
            for start, stop in self._row_blocks()
        ]
        result = torch.cat(products, dim=-2)
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
        params = operator._all_params()
        symmetric = operator._is_symmetric()
        compiled = operator._compiled()
        grads: list[Tensor | None] = [None] * len(args)
        targets = [args[i] for i in wanted]
        for start, stop in operator._row_blocks():
            with torch.enable_grad():
                block = self._block(
                    operator.covar_func, operator.x1, operator.x2, params, start, stop, symmetric, compiled
                )
                loss = (left_vecs[..., start:stop, :] * (block @ right_vecs)).sum()
                block_grads = torch.autograd.grad(loss, targets, allow_unused=True)
            for i, grad in zip(wanted, block_grads):
                if grad is not None:
                    grads[i] = grad if grads[i] is None else grads[i] + grad
        return tuple(
            torch.zeros_like(arg) if arg.requires_grad and grad is None else grad
            for arg, grad in zip(args, grads)
        )
