"""NNGPKernel: GPyTorch's kernel test case, closed forms, per-layer and ARD semantics, homogeneity."""

from __future__ import annotations

import math
import unittest

import pytest
import torch

import gp_ntk
from gp_ntk.testing import NetworkKernelTestCase

DTYPE = torch.float64
pytestmark = pytest.mark.usefixtures("float64_default")


class TestNNGPKernelReLU(NetworkKernelTestCase, unittest.TestCase):
    seed = 0

    def create_kernel(self, **kwargs):
        return gp_ntk.NNGPKernel(depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1, **kwargs)

    def create_kernel_ard(self, num_dims, **kwargs):
        return gp_ntk.NNGPKernel(3, "relu", 2.0, 0.1, ard_num_dims=num_dims, **kwargs)


class TestNNGPKernelErfPerLayer(NetworkKernelTestCase, unittest.TestCase):
    seed = 1

    def create_kernel(self, **kwargs):
        return gp_ntk.NNGPKernel(2, "erf", [1.0, 2.0, 0.5], [0.1, 0.2, 0.3], **kwargs)

    def create_kernel_ard(self, num_dims, **kwargs):
        return gp_ntk.NNGPKernel(2, "erf", 1.5, 0.1, per_layer=True, ard_num_dims=num_dims, **kwargs)


class TestNNGPKernelNumericalNoBias(NetworkKernelTestCase, unittest.TestCase):
    seed = 2

    def create_kernel(self, **kwargs):
        return gp_ntk.NNGPKernel(2, gp_ntk.Numerical(torch.tanh, degree=8), 1.0, 0.0, **kwargs)


def _relu_dual(var1, cov, var2):
    theta = torch.acos(torch.clamp(cov / torch.sqrt(var1 * var2), -1, 1))
    return torch.sqrt(var1 * var2) / (2 * math.pi) * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta))


def _manual_relu_nngp(x1, x2, weights, biases):
    d = x1.shape[-1]
    cov = weights[0] * x1 @ x2.T / d + biases[0]
    var1 = weights[0] * (x1 * x1).sum(-1, keepdim=True) / d + biases[0]
    var2 = weights[0] * (x2 * x2).sum(-1, keepdim=True).T / d + biases[0]
    for w, b in zip(weights[1:], biases[1:]):
        cov = w * _relu_dual(var1, cov, var2) + b
        var1, var2 = w * var1 / 2 + b, w * var2 / 2 + b
    return cov


def test_one_hidden_layer_relu_closed_form():
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(7, 4, generator=g, dtype=DTYPE), torch.randn(5, 4, generator=g, dtype=DTYPE)
    kernel = gp_ntk.NNGPKernel(1, "relu", 2.0, 0.0).double()
    n1, n2 = x1.norm(dim=-1, keepdim=True), x2.norm(dim=-1, keepdim=True).T
    theta = torch.acos(torch.clamp(x1 @ x2.T / (n1 * n2), -1, 1))
    # W^2 * (W^2 |x||y| / d) * J_1(theta) / (2 pi), W^2 = 2
    expected = (
        2.0 * 2.0 * n1 * n2 / 4 * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta)) / (2 * math.pi)
    )
    torch.testing.assert_close(kernel(x1, x2).to_dense(), expected, rtol=1e-12, atol=1e-12)


def test_per_layer_variances_follow_the_recursion():
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(6, 3, generator=g, dtype=DTYPE), torch.randn(4, 3, generator=g, dtype=DTYPE)
    weights, biases = [1.0, 2.0, 0.5, 3.0], [0.1, 0.2, 0.3, 0.4]
    kernel = gp_ntk.NNGPKernel(3, "relu", weights, biases).double()
    assert kernel.per_layer and kernel.weight_variance.shape == (4,)
    expected = _manual_relu_nngp(x1, x2, weights, biases)
    torch.testing.assert_close(kernel(x1, x2).to_dense(), expected, rtol=1e-12, atol=1e-12)
    # shared values broadcast to every layer
    shared = gp_ntk.NNGPKernel(3, "relu", 2.0, 0.1).double()
    torch.testing.assert_close(
        shared(x1, x2).to_dense(), _manual_relu_nngp(x1, x2, [2.0] * 4, [0.1] * 4), rtol=1e-12, atol=1e-12
    )


def test_ard_is_per_feature_input_scaling():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 3, generator=g, dtype=DTYPE)
    ard = gp_ntk.NNGPKernel(2, "erf", 1.5, 0.2, ard_num_dims=3).double()
    scales = torch.tensor([0.5, 2.0, 4.0], dtype=DTYPE)
    ard.input_weight_variance = scales
    iso = gp_ntk.NNGPKernel(2, "erf", 1.5, 0.2).double()
    # diag(v) in the first layer == isotropic weight variance w on inputs x * sqrt(v / w)
    expected = iso(x * torch.sqrt(scales / 1.5)).to_dense()
    torch.testing.assert_close(ard(x).to_dense(), expected, rtol=1e-12, atol=1e-12)
    per_layer_ard = gp_ntk.NNGPKernel(2, "erf", 1.5, 0.2, ard_num_dims=3, per_layer=True)
    assert per_layer_ard.weight_variance.shape == (2,)  # layers 2 and 3; layer 1 is the ARD one


@pytest.mark.parametrize(
    "activation,degree", [("relu", 1), (gp_ntk.LeakyReLU(0.2), 1), (gp_ntk.ArcCos(2), 2), ("abs", 1)]
)
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_homogeneity_in_each_input(activation, degree, depth):
    # bias-free, positively homogeneous phi of degree r: each layer raises the scaling to r
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(5, 3, generator=g, dtype=DTYPE), torch.randn(4, 3, generator=g, dtype=DTYPE)
    kernel = gp_ntk.NNGPKernel(depth, activation, 1.7, 0.0).double()
    for a in (0.4, 3.0):
        torch.testing.assert_close(
            kernel(a * x, y).to_dense(),
            a ** (degree**depth) * kernel(x, y).to_dense(),
            rtol=1e-10,
            atol=1e-12,
        )
    if activation == "abs":  # even: absolutely homogeneous
        torch.testing.assert_close(kernel(-2.0 * x, y).to_dense(), 2.0 * kernel(x, y).to_dense())


def test_bias_breaks_homogeneity():
    x, y = torch.randn(3, 2, dtype=DTYPE), torch.randn(3, 2, dtype=DTYPE)
    kernel = gp_ntk.NNGPKernel(2, "relu", 2.0, 0.5).double()
    assert not torch.allclose(kernel(2 * x, y).to_dense(), 2 * kernel(x, y).to_dense())
