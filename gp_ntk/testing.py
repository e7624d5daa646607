r"""A reusable test case for network kernels, in the manner of GPyTorch's ``BaseKernelTestCase``.

:class:`NetworkKernelTestCase` adds to GPyTorch's kernel checks (batch shapes, ``active_dims``,
indexing, pickling) the properties every gp_ntk-style kernel must have:

* :math:`k(X, X)` exactly symmetric, bit for bit, and positive semi-definite;
* ``diag=True`` equal to the diagonal of the full matrix;
* kernel batches (``batch_shape``) and input batches evaluated member by member;
* float64 ``gradcheck`` of the hyperparameters and of both inputs (at distinct points: a
  kernel may have a cusp at :math:`x = y`, like the ReLU NTK);
* the dense, row-blocked and lazy evaluations (:mod:`gp_ntk.settings`) in agreement;
* a ``state_dict`` round trip that reproduces the kernel's values.

A kernel author subclasses it together with ``unittest.TestCase`` (pytest collects it as
well) and supplies :meth:`~NetworkKernelTestCase.create_kernel`:

.. code-block:: python

    import unittest

    import gp_ntk
    from gp_ntk.testing import NetworkKernelTestCase


    class TestMyKernel(NetworkKernelTestCase, unittest.TestCase):
        def create_kernel(self, **kwargs):
            return gp_ntk.NTKKernel(depth=2, activation="erf", **kwargs)

``create_kernel`` receives GPyTorch's keyword arguments (``batch_shape``, ``active_dims``,
``ard_num_dims``); a kernel without ARD overrides :meth:`~NetworkKernelTestCase.create_kernel_ard`
to raise ``NotImplementedError``, which skips the ARD checks.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from gpytorch.kernels import Kernel
from gpytorch.test.base_kernel_test_case import BaseKernelTestCase
from torch import Tensor
from torch.func import functional_call

from . import settings

__all__ = ["NetworkKernelTestCase"]


class _DenseCall(torch.nn.Module):
    """``kernel.forward(x1, x2, diag)`` as a dense tensor, a module for ``functional_call``."""

    def __init__(self, kernel: Kernel, diag: bool) -> None:
        super().__init__()
        self.kernel = kernel
        self.diag = diag

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        return _dense(self.kernel.forward(x1, x2, diag=self.diag))


def _dense(value: Any) -> Tensor:
    return value.to_dense() if hasattr(value, "to_dense") else value


class NetworkKernelTestCase(BaseKernelTestCase):
    """Checks any gp_ntk-style kernel must pass; mix in with ``unittest.TestCase``.

    Class attributes a subclass may change: ``num_features`` and ``num_points`` of the
    generated inputs, ``input_scale`` (their standard deviation), ``gradcheck_tolerances``
    (``atol``, ``rtol`` of the float64 ``gradcheck``) and ``psd_tolerance`` (the smallest
    eigenvalue allowed, relative to the largest).
    """

    num_features: int = 3
    num_points: int = 10
    input_scale: float = 1.0
    gradcheck_tolerances: tuple[float, float] = (1e-6, 1e-4)
    psd_tolerance: float = 1e-10

    def create_kernel(self, **kwargs) -> Kernel:
        """A kernel to test, built with GPyTorch's keyword arguments ``kwargs``."""
        raise NotImplementedError(f"{type(self).__name__} must define create_kernel(**kwargs)")

    def create_kernel_no_ard(self, **kwargs) -> Kernel:
        """GPyTorch's kernel without ARD: :meth:`create_kernel`."""
        return self.create_kernel(**kwargs)

    def create_kernel_ard(self, num_dims: int, **kwargs) -> Kernel:
        """GPyTorch's kernel with ARD: :meth:`create_kernel` with ``ard_num_dims=num_dims``.

        Raise ``NotImplementedError`` here for a kernel without ARD (GPyTorch then skips its
        ARD checks).
        """
        return self.create_kernel(ard_num_dims=num_dims, **kwargs)

    def create_inputs(
        self,
        num_points: int | None = None,
        batch_shape: tuple[int, ...] = (),
        dtype: torch.dtype = torch.float64,
        seed: int = 0,
    ) -> Tensor:
        """Distinct random inputs ``(*batch_shape, num_points, num_features)``."""
        generator = torch.Generator().manual_seed(seed)
        shape = (*batch_shape, num_points or self.num_points, self.num_features)
        return (self.input_scale * torch.randn(shape, generator=generator, dtype=torch.float64)).to(dtype)

    def _kernel(self, dtype: torch.dtype = torch.float64, **kwargs) -> Kernel:
        return self.create_kernel(**kwargs).to(dtype)

    # ------------------------------------------------------------------ the checks

    def test_network_kernel_matrix_is_exactly_symmetric(self) -> None:
        for dtype in (torch.float32, torch.float64):
            kernel = self._kernel(dtype)
            x = self.create_inputs(dtype=dtype)
            # a duplicated row: the case where rounding would break symmetry first
            x = torch.cat([x, x[:1]], dim=-2)
            with torch.no_grad():
                matrix = _dense(kernel(x))
            self.assertTrue(torch.equal(matrix, matrix.mT), f"k(X, X) is not exactly symmetric in {dtype}")

    def test_network_kernel_matrix_is_positive_semidefinite(self) -> None:
        kernel = self._kernel()
        with torch.no_grad():
            matrix = _dense(kernel(self.create_inputs(2 * self.num_points)))
        eigenvalues = torch.linalg.eigvalsh(matrix)
        largest = float(eigenvalues.abs().max())
        self.assertGreaterEqual(float(eigenvalues.min()), -self.psd_tolerance * max(largest, 1.0))

    def test_network_diag_equals_the_diagonal_of_the_full_matrix(self) -> None:
        kernel = self._kernel()
        x1, x2 = self.create_inputs(seed=1), self.create_inputs(seed=2)
        with torch.no_grad():
            for a, b in ((x1, x1), (x1, x2)):
                diagonal = _dense(kernel(a, b, diag=True))
                full = _dense(kernel(a, b)).diagonal(dim1=-2, dim2=-1)
                torch.testing.assert_close(diagonal, full, rtol=1e-10, atol=1e-12)

    def test_network_batch_shapes(self) -> None:
        batch = torch.Size([2])
        kernel = self._kernel(batch_shape=batch)
        single = self._kernel()
        x = self.create_inputs(batch_shape=(3, *batch))
        with torch.no_grad():
            batched = _dense(kernel(x))
            self.assertEqual(batched.shape, torch.Size([3, *batch, self.num_points, self.num_points]))
            members = torch.stack(
                [torch.stack([_dense(single(x[i, j])) for j in range(2)]) for i in range(3)]
            )
            diagonal = _dense(kernel(x, diag=True))
        torch.testing.assert_close(batched, members, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(diagonal, members.diagonal(dim1=-2, dim2=-1), rtol=1e-10, atol=1e-12)

    def test_network_gradcheck_hyperparameters(self) -> None:
        kernel = self._kernel()
        x1, x2 = self.create_inputs(5, seed=3), self.create_inputs(4, seed=4)
        atol, rtol = self.gradcheck_tolerances
        for diag, (a, b) in ((False, (x1, x2)), (True, (x1, x1[[1, 2, 3, 4, 0]]))):
            module = _DenseCall(kernel, diag)
            names = [name for name, _ in module.named_parameters()]
            raw = tuple(p.detach().clone().requires_grad_(True) for _, p in module.named_parameters())
            if not raw:
                return

            def evaluate(*values: Tensor, a=a, b=b, module=module, names=names) -> Tensor:
                return functional_call(module, dict(zip(names, values)), (a, b))

            self.assertTrue(torch.autograd.gradcheck(evaluate, raw, eps=1e-6, atol=atol, rtol=rtol))

    def test_network_gradcheck_inputs(self) -> None:
        kernel = self._kernel()
        x1 = self.create_inputs(5, seed=5).requires_grad_(True)
        x2 = self.create_inputs(4, seed=6).requires_grad_(True)
        x3 = self.create_inputs(5, seed=7).requires_grad_(True)
        atol, rtol = self.gradcheck_tolerances

        def cross(a: Tensor, b: Tensor) -> Tensor:
            return _dense(kernel.forward(a, b))

        def paired(a: Tensor, b: Tensor) -> Tensor:
            return _dense(kernel.forward(a, b, diag=True))

        self.assertTrue(torch.autograd.gradcheck(cross, (x1, x2), eps=1e-6, atol=atol, rtol=rtol))
        self.assertTrue(torch.autograd.gradcheck(paired, (x1, x3), eps=1e-6, atol=atol, rtol=rtol))

    def test_network_dense_blocked_and_lazy_agree(self) -> None:
        kernel = self._kernel()
        x1, x2 = (
            self.create_inputs(3 * self.num_points, seed=8),
            self.create_inputs(2 * self.num_points, seed=9),
        )
        vector = torch.randn(x2.shape[-2], 2, generator=torch.Generator().manual_seed(10), dtype=x2.dtype)
        one_piece = (settings.lazy_evaluation("never"), settings.block_evaluation(min_elements=10**12))
        blocked = (
            settings.lazy_evaluation("never"),
            settings.block_evaluation(min_elements=0, block_elements=64),
        )
        lazy = (
            settings.lazy_evaluation("always", block_elements=64),
            settings.block_evaluation(min_elements=0),
        )
        with torch.no_grad(), settings.compile_kernels("never"):
            results = []
            for modes in (one_piece, blocked, lazy):
                with modes[0], modes[1]:
                    results.append(
                        (
                            _dense(kernel.forward(x1, x1)),
                            _dense(kernel.forward(x1, x2)),
                            _dense(kernel.forward(x1, x2) @ vector),
                        )
                    )
        for other in results[1:]:
            for reference, value in zip(results[0], other):
                torch.testing.assert_close(value, reference, rtol=1e-10, atol=1e-12)
        square = results[2][0]
        self.assertTrue(torch.equal(square, square.mT), "the lazy k(X, X) is not exactly symmetric")

    def test_network_state_dict_round_trip(self) -> None:
        source = self._kernel()
        with torch.no_grad():
            for parameter in source.parameters():
                parameter.add_(0.25)
        target = self._kernel()
        target.load_state_dict(copy.deepcopy(source.state_dict()))
        x = self.create_inputs(seed=11)
        with torch.no_grad():
            torch.testing.assert_close(_dense(target(x)), _dense(source(x)), rtol=0.0, atol=0.0)
