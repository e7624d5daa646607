"""NTKKernel: GPyTorch's kernel test case, the two-layer closed form, recursion, homogeneity."""

from __future__ import annotations

import math
import unittest

import pytest
import torch

import gp_ntk
from gp_ntk.testing import NetworkKernelTestCase

DTYPE = torch.float64
pytestmark = pytest.mark.usefixtures("float64_default")


class TestNTKKernelReLU(NetworkKernelTestCase, unittest.TestCase):
    seed = 0

    def create_kernel(self, **kwargs):
        return gp_ntk.NTKKernel(depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1, **kwargs)

    def create_kernel_ard(self, num_dims, **kwargs):
        return gp_ntk.NTKKernel(3, "relu", 2.0, 0.1, ard_num_dims=num_dims, **kwargs)


class TestNTKKernelGELUPerLayer(NetworkKernelTestCase, unittest.TestCase):
    seed = 1

    def create_kernel(self, **kwargs):
        return gp_ntk.NTKKernel(2, "gelu", 1.5, 0.1, per_layer=True, **kwargs)

    def create_kernel_ard(self, num_dims, **kwargs):
        return gp_ntk.NTKKernel(2, "gelu", 1.5, 0.1, ard_num_dims=num_dims, **kwargs)


def _kappa(u):
    return (2 * u * (math.pi - torch.acos(u)) + torch.sqrt(torch.clamp(1 - u * u, min=0))) / math.pi


def test_two_layer_relu_ntk_closed_form():
    # depth 1, no bias, W_std^2 = 1: Theta = |x||y| / (2 d) * kappa(cos theta)
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(6, 5, generator=g, dtype=DTYPE), torch.randn(4, 5, generator=g, dtype=DTYPE)
    n1, n2 = x1.norm(dim=-1, keepdim=True), x2.norm(dim=-1, keepdim=True).T
    u = torch.clamp(x1 @ x2.T / (n1 * n2), -1, 1)
    expected = n1 * n2 / (2 * 5) * _kappa(u)
    kernel = gp_ntk.NTKKernel(1, "relu", 1.0, 0.0).double()
    torch.testing.assert_close(kernel(x1, x2).to_dense(), expected, rtol=1e-12, atol=1e-12)
    # the diagonal: kappa(1) = 2, so Theta(x, x) = |x|^2 / d
    torch.testing.assert_close(kernel(x1, diag=True), (x1 * x1).sum(-1) / 5, rtol=1e-12, atol=1e-12)


def test_ntk_recursion_against_nngp_kernels():
    # Theta^(L+1) = Sigma^(L+1) + W^2 qdot^(L) Theta^(L), checked layer by layer with NNGPKernel
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(5, 3, generator=g, dtype=DTYPE), torch.randn(4, 3, generator=g, dtype=DTYPE)
    w, b = 1.7, 0.2
    act = gp_ntk.Erf()
    theta = gp_ntk.NNGPKernel(1, "identity", w, b).double()  # layer 1 is linear: W^2 x.y/d + b
    sigma_1 = (w * x1 @ x2.T / 3 + b, w * (x1 * x1).sum(-1, keepdim=True) / 3 + b)
    theta_prev = sigma_1[0]
    for depth in (1, 2, 3):
        prev = gp_ntk.NNGPKernel(depth - 1, "erf", w, b).double() if depth > 1 else None
        cov = prev(x1, x2).to_dense() if prev else sigma_1[0]
        v1 = prev(x1, diag=True).unsqueeze(-1) if prev else sigma_1[1]
        v2 = (prev(x2, diag=True) if prev else w * (x2 * x2).sum(-1) / 3 + b).unsqueeze(-2)
        expected = (
            gp_ntk.NNGPKernel(depth, "erf", w, b).double()(x1, x2).to_dense()
            + w * act.derivative_dual(v1, cov, v2) * theta_prev
        )
        got = gp_ntk.NTKKernel(depth, "erf", w, b).double()(x1, x2).to_dense()
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        theta_prev = got
    assert theta is not None


def test_nngp_and_ntk_in_one_pass():
    x = torch.randn(9, 4, dtype=DTYPE)
    kernel = gp_ntk.NTKKernel(3, "relu", 2.0, 0.1).double()
    nngp, ntk = kernel.nngp_and_ntk(x, x)
    torch.testing.assert_close(ntk, kernel(x).to_dense())
    torch.testing.assert_close(nngp, gp_ntk.NNGPKernel(3, "relu", 2.0, 0.1).double()(x).to_dense())
    # identity activation: a deep linear network's NTK is (L + 1) times its NNGP when w = 1, b = 0
    linear = gp_ntk.NTKKernel(3, "identity", 1.0, 0.0).double()
    nngp, ntk = linear.nngp_and_ntk(x, x)
    torch.testing.assert_close(ntk, 4 * nngp)


@pytest.mark.parametrize("activation", ["relu", gp_ntk.LeakyReLU(0.3), "abs"])
@pytest.mark.parametrize("depth", [1, 3])
def test_ntk_homogeneity_degree_one(activation, depth):
    x, y = torch.randn(5, 3, dtype=DTYPE), torch.randn(4, 3, dtype=DTYPE)
    kernel = gp_ntk.NTKKernel(depth, activation, 1.3, 0.0).double()
    for a in (0.25, 4.0):
        torch.testing.assert_close(
            kernel(a * x, y).to_dense(), a * kernel(x, y).to_dense(), rtol=1e-10, atol=1e-12
        )


def test_step_ntk_has_no_derivative_term():
    # phi' = 0 a.e. for the step: Theta^(L+1) = Sigma^(L+1) + W^2 * 0 * Theta^(L)
    x = torch.randn(6, 3, dtype=DTYPE)
    ntk = gp_ntk.NTKKernel(2, "step", 1.5, 0.1).double()(x).to_dense()
    nngp = gp_ntk.NNGPKernel(2, "step", 1.5, 0.1).double()(x).to_dense()
    torch.testing.assert_close(ntk, nngp)


def _empirical_standard_ntk(x, depth, activation, weight_variance, bias_variance, width, seed):
    """NTK of one finite network in the standard parameterization, by torch.func."""
    g = torch.Generator().manual_seed(seed)
    sizes = [x.shape[-1]] + [width] * depth + [1]
    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"w{i}"] = torch.randn(n_in, n_out, generator=g, dtype=DTYPE) * math.sqrt(
            weight_variance / n_in
        )
        if bias_variance > 0:
            params[f"b{i}"] = torch.randn(n_out, generator=g, dtype=DTYPE) * math.sqrt(bias_variance)

    def net(p, inputs):
        h = inputs
        for i in range(len(sizes) - 1):
            h = h @ p[f"w{i}"] + (p[f"b{i}"] if f"b{i}" in p else 0.0)
            if i < len(sizes) - 2:
                h = activation(h)
        return h.squeeze(-1)

    jac = torch.func.jacrev(net)(params, x)
    flat = torch.cat([j.reshape(x.shape[0], -1) for j in jac.values()], dim=1)
    return flat @ flat.T


@pytest.mark.parametrize("activation,bias", [("relu", 0.1), ("erf", 0.0), ("relu", 1.0)])
def test_standard_parameterization_against_empirical_ntk(activation, bias):
    # Each entry of the mean empirical NTK over independent networks is compared with the
    # formula in units of its Monte-Carlo standard error (measured z-scores stay below 3.5).
    g = torch.Generator().manual_seed(11)
    x = torch.randn(6, 3, generator=g, dtype=DTYPE)
    x[1] = 2.0 * x[0]
    act = gp_ntk.get_activation(activation)
    width, depth, w, nets = 512, 2, 1.5, 24
    samples = torch.stack(
        [_empirical_standard_ntk(x, depth, act, w, bias, width, seed) for seed in range(nets)]
    )
    mean, se = samples.mean(0), samples.std(0) / math.sqrt(nets)
    kernel = gp_ntk.NTKKernel(depth, activation, w, bias, parameterization="standard", width=width)
    expected = kernel(x).to_dense()
    z = ((mean - expected) / se).abs().max()
    assert float(z) < 5, float(z)
    # the width-independent NTK parameterization is far outside the Monte-Carlo error
    ntk_param = gp_ntk.NTKKernel(depth, activation, w, bias)(x).to_dense()
    assert float(((mean - ntk_param) / se).abs().max()) > 10


def test_standard_parameterization_arguments():
    with pytest.raises(ValueError, match="width .* is required with parameterization='standard'"):
        gp_ntk.NTKKernel(2, "relu", parameterization="standard")
    with pytest.raises(ValueError, match="width applies only"):
        gp_ntk.NTKKernel(2, "relu", width=10)
    x = torch.randn(5, 2, dtype=DTYPE)
    std = gp_ntk.NNGPKernel(2, "relu", 2.0, 0.1, parameterization="standard", width=10)
    torch.testing.assert_close(std(x).to_dense(), gp_ntk.NNGPKernel(2, "relu", 2.0, 0.1)(x).to_dense())
