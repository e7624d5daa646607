"""ArcCosineKernel: GPyTorch's kernel test case, Cho & Saul closed forms, composition, homogeneity."""

from __future__ import annotations

import math
import unittest

import pytest
import torch

import gp_ntk
from gp_ntk.testing import NetworkKernelTestCase

DTYPE = torch.float64
pytestmark = pytest.mark.usefixtures("float64_default")


class TestArcCosineKernelOrder1(NetworkKernelTestCase, unittest.TestCase):
    seed = 0

    def create_kernel(self, **kwargs):
        return gp_ntk.ArcCosineKernel(order=1, num_layers=1, weight_variance=1.0, bias_variance=0.5, **kwargs)

    def create_kernel_ard(self, num_dims, **kwargs):
        return gp_ntk.ArcCosineKernel(1, 1, 1.0, 0.5, ard_num_dims=num_dims, **kwargs)


class TestArcCosineKernelOrder2Deep(NetworkKernelTestCase, unittest.TestCase):
    seed = 1

    def create_kernel(self, **kwargs):
        return gp_ntk.ArcCosineKernel(order=2, num_layers=3, weight_variance=0.7, bias_variance=0.3, **kwargs)

    def create_kernel_ard(self, num_dims, **kwargs):
        return gp_ntk.ArcCosineKernel(2, 3, 0.7, 0.3, ard_num_dims=num_dims, **kwargs)


class TestArcCosineKernelOrder0NoBias(NetworkKernelTestCase, unittest.TestCase):
    seed = 2

    def create_kernel(self, **kwargs):
        return gp_ntk.ArcCosineKernel(order=0, num_layers=2, bias_variance=0.0, **kwargs)


def _j(order, theta):
    s, c = torch.sin(theta), torch.cos(theta)
    return [math.pi - theta, s + (math.pi - theta) * c, 3 * s * c + (math.pi - theta) * (1 + 2 * c**2)][order]


def _cho_saul(order, kxy, kxx, kyy):
    theta = torch.acos(torch.clamp(kxy / torch.sqrt(kxx * kyy), -1, 1))
    return (kxx * kyy) ** (order / 2) * _j(order, theta) / math.pi


@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_matches_cho_saul_closed_forms(order, num_layers):
    g = torch.Generator().manual_seed(order)
    x1, x2 = torch.randn(6, 3, generator=g, dtype=DTYPE), torch.randn(5, 3, generator=g, dtype=DTYPE)
    w = torch.tensor([0.5, 1.0, 2.0], dtype=DTYPE)
    b = 0.4
    kxy = (x1 * w) @ x2.T + b
    kxx = ((x1 * w) * x1).sum(-1, keepdim=True) + b
    kyy = ((x2 * w) * x2).sum(-1, keepdim=True).T + b
    for _ in range(num_layers):
        kxy, kxx, kyy = (
            _cho_saul(order, kxy, kxx, kyy),
            _cho_saul(order, kxx, kxx, kxx),
            _cho_saul(order, kyy, kyy, kyy),
        )
    kernel = gp_ntk.ArcCosineKernel(order, num_layers, 1.0, b, ard_num_dims=3).double()
    kernel.input_weight_variance = w
    torch.testing.assert_close(kernel(x1, x2).to_dense(), kxy, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(kernel(x1, diag=True), kxx.squeeze(-1), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("order", [3, 4, 5])
def test_higher_orders_diagonal_and_orthogonal_values(order):
    # k_n(x, x) = (2n-1)!! |x|^(2n);  k_n(x, y) for orthogonal x, y = J_n(pi/2) |x|^n |y|^n / pi
    kernel = gp_ntk.ArcCosineKernel(order, 1, 1.0, 0.0).double()
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0]], dtype=DTYPE)
    k = kernel(x).to_dense()
    double_factorial = math.prod(range(2 * order - 1, 0, -2))
    assert float(k[0, 0]) == pytest.approx(double_factorial * 2.0 ** (2 * order), rel=1e-12)
    j_half = float(gp_ntk.ops.arccos_j(torch.zeros((), dtype=DTYPE), order))
    assert float(k[0, 1]) == pytest.approx(j_half * 6.0**order / math.pi, rel=1e-12)


def test_order_one_is_twice_relu_dual():
    x = torch.randn(6, 3, dtype=DTYPE)
    cho_saul = gp_ntk.ArcCosineKernel(1, 1, 1.0, 0.0).double()(x).to_dense()
    var = (x * x).sum(-1)
    relu = gp_ntk.ReLU().dual(var.unsqueeze(-1), x @ x.T, var.unsqueeze(-2))
    torch.testing.assert_close(cho_saul, 2 * relu)


@pytest.mark.parametrize("order,num_layers", [(1, 1), (1, 3), (2, 1), (2, 2), (3, 2)])
def test_homogeneity(order, num_layers):
    x, y = torch.randn(4, 3, dtype=DTYPE), torch.randn(5, 3, dtype=DTYPE)
    kernel = gp_ntk.ArcCosineKernel(order, num_layers, 1.0, 0.0).double()
    a = 1.7
    torch.testing.assert_close(
        kernel(a * x, y).to_dense(),
        a ** (order**num_layers) * kernel(x, y).to_dense(),
        rtol=1e-10,
        atol=1e-12,
    )


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_nngp_and_ntk_are_those_of_the_composed_network(order, num_layers):
    # the arc-cosine kernel is the NNGP of ArcCos(n) layers of weight variance 2 on the
    # first-layer inner product; its NTK is that network's, which NTKKernel computes with a first
    # layer of weight variance w * d (cancelling its 1/d) and 2 for every later layer
    dtype = torch.float64
    gen = torch.Generator().manual_seed(order + 10 * num_layers)
    x, y = torch.randn(6, 3, generator=gen, dtype=dtype), torch.randn(4, 3, generator=gen, dtype=dtype)
    arc = gp_ntk.ArcCosineKernel(
        order=order, num_layers=num_layers, weight_variance=0.7, bias_variance=0.0
    ).to(dtype)
    per_layer = [0.7 * 3] + [2.0] * num_layers
    deep = gp_ntk.NTKKernel(
        depth=num_layers, activation=gp_ntk.ArcCos(order), weight_variance=per_layer, bias_variance=0.0
    ).to(dtype)
    with torch.no_grad():
        nngp, ntk = arc.nngp_and_ntk(x, y)
        expected_nngp, expected_ntk = deep.nngp_and_ntk(x, y)
        diag_nngp, diag_ntk = arc.nngp_and_ntk(x, x, diag=True)
        full_nngp, full_ntk = arc.nngp_and_ntk(x, x)
        torch.testing.assert_close(nngp, arc(x, y).to_dense(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(nngp, expected_nngp, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ntk, expected_ntk, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(diag_nngp, full_nngp.diagonal(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(diag_ntk, full_ntk.diagonal(), rtol=1e-12, atol=1e-14)
