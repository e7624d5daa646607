"""gp_ntk.testing: the reusable kernel test case passes a correct kernel and catches broken ones."""

from __future__ import annotations

import unittest

import pytest
import torch
from torch.autograd.gradcheck import GradcheckError

import gp_ntk
from gp_ntk.testing import NetworkKernelTestCase


class _WrongDiagonal(gp_ntk.NNGPKernel):
    """diag=True off by 0.1 %: what a separately written diagonal path can get wrong."""

    def forward(self, x1, x2, diag=False, **params):
        out = super().forward(x1, x2, diag=diag, **params)
        return 1.001 * out if diag else out


class _Asymmetric(gp_ntk.NNGPKernel):
    """One ulp-sized asymmetry above the diagonal."""

    def forward(self, x1, x2, diag=False, **params):
        out = super().forward(x1, x2, diag=diag, **params)
        if diag:
            return out
        out = out.to_dense() if hasattr(out, "to_dense") else out
        return out + torch.triu(torch.full_like(out, torch.finfo(out.dtype).eps), diagonal=1) * out.abs()


class _Indefinite(gp_ntk.NNGPKernel):
    """A symmetric matrix with a negative eigenvalue (the kernel minus a multiple of its trace)."""

    def forward(self, x1, x2, diag=False, **params):
        out = super().forward(x1, x2, diag=diag, **params)
        out = out.to_dense() if hasattr(out, "to_dense") else out
        return out - 0.5 * out.mean()


def _case(kernel_class):
    class Case(NetworkKernelTestCase, unittest.TestCase):
        def create_kernel(self, **kwargs):
            return kernel_class(2, "relu", 2.0, 0.1, **kwargs)

    return Case


def _run(case_class, name: str) -> None:
    case = case_class(name)
    case.setUp()
    try:
        getattr(case, name)()
    finally:
        case.tearDown()


@pytest.mark.parametrize(
    "kernel_class,check",
    [
        (_WrongDiagonal, "test_network_diag_equals_the_diagonal_of_the_full_matrix"),
        (_Asymmetric, "test_network_kernel_matrix_is_exactly_symmetric"),
        (_Indefinite, "test_network_kernel_matrix_is_positive_semidefinite"),
    ],
)
def test_broken_kernels_fail_their_check(kernel_class, check):
    _run(_case(gp_ntk.NNGPKernel), check)
    with pytest.raises(AssertionError):
        _run(_case(kernel_class), check)


def test_a_wrong_hyperparameter_gradient_fails_gradcheck():
    class _DetachedBias(gp_ntk.NNGPKernel):
        # the bias enters the value but not its gradient
        def forward(self, x1, x2, diag=False, **params):
            out = super().forward(x1, x2, diag=diag, **params)
            out = out.to_dense() if hasattr(out, "to_dense") else out
            return out + self.bias_variance.squeeze(-1).detach() - self.bias_variance.squeeze(-1)

    with pytest.raises((AssertionError, GradcheckError)):
        _run(_case(_DetachedBias), "test_network_gradcheck_hyperparameters")
