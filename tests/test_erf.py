"""ErfKernel: GPyTorch's kernel test case and Williams' arcsine formula."""

from __future__ import annotations

import math
import unittest

import pytest
import torch

import gp_ntk
from gp_ntk.testing import NetworkKernelTestCase

DTYPE = torch.float64
pytestmark = pytest.mark.usefixtures("float64_default")


class TestErfKernel(NetworkKernelTestCase, unittest.TestCase):
    seed = 0

    def create_kernel(self, **kwargs):
        return gp_ntk.ErfKernel(weight_variance=1.5, bias_variance=0.5, **kwargs)

    def create_kernel_ard(self, num_dims, **kwargs):
        return gp_ntk.ErfKernel(1.5, 0.5, ard_num_dims=num_dims, **kwargs)


class TestErfKernelNoBias(NetworkKernelTestCase, unittest.TestCase):
    seed = 1

    def create_kernel(self, **kwargs):
        return gp_ntk.ErfKernel(weight_variance=2.0, bias_variance=0.0, **kwargs)


def _williams(x1, x2, sigma):
    # x~ = (1, x), Sigma = diag(sigma): the formula exactly as Williams (1996) writes it
    t1 = torch.cat([torch.ones(x1.shape[0], 1, dtype=x1.dtype), x1], -1)
    t2 = torch.cat([torch.ones(x2.shape[0], 1, dtype=x2.dtype), x2], -1)
    cross = 2 * (t1 * sigma) @ t2.T
    n1 = 1 + 2 * ((t1 * sigma) * t1).sum(-1, keepdim=True)
    n2 = 1 + 2 * ((t2 * sigma) * t2).sum(-1, keepdim=True).T
    return 2 / math.pi * torch.asin(cross / torch.sqrt(n1 * n2))


def test_matches_williams_formula_isotropic_and_ard():
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(7, 3, generator=g, dtype=DTYPE), torch.randn(4, 3, generator=g, dtype=DTYPE)
    iso = gp_ntk.ErfKernel(1.5, 0.5).double()
    sigma = torch.tensor([0.5, 1.5, 1.5, 1.5], dtype=DTYPE)
    torch.testing.assert_close(iso(x1, x2).to_dense(), _williams(x1, x2, sigma), rtol=1e-12, atol=1e-12)
    ard = gp_ntk.ErfKernel(1.0, 0.5, ard_num_dims=3).double()
    ard.input_weight_variance = torch.tensor([0.2, 1.0, 3.0], dtype=DTYPE)
    sigma = torch.tensor([0.5, 0.2, 1.0, 3.0], dtype=DTYPE)
    torch.testing.assert_close(ard(x1, x2).to_dense(), _williams(x1, x2, sigma), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        ard(x1, diag=True), _williams(x1, x1, sigma).diagonal(), rtol=1e-12, atol=1e-12
    )


def test_value_at_origin():
    kernel = gp_ntk.ErfKernel(1.0, 1.0).double()
    k = kernel(torch.zeros(1, 2, dtype=DTYPE)).to_dense()
    assert float(k) == pytest.approx(2 / math.pi * math.asin(2 / 3), rel=1e-14)


def test_one_hidden_layer_nngp_is_williams_with_readout():
    # NNGPKernel(depth=1, "erf") = W^2 * Williams(weights W^2 / d, bias b) + b
    x = torch.randn(5, 4, dtype=DTYPE)
    w, b = 2.0, 0.3
    nngp = gp_ntk.NNGPKernel(1, "erf", w, b).double()(x).to_dense()
    williams = gp_ntk.ErfKernel(w / 4, b).double()(x).to_dense()
    torch.testing.assert_close(nngp, w * williams + b)


def test_nngp_and_ntk_are_those_of_the_one_hidden_layer_erf_network():
    # Williams' kernel is the NNGP of f = sum_i v_i erf(w_i . x) with unit read-out variance; its
    # NTK is that network's: NTKKernel(depth=1, "erf") with first-layer variance w * d
    dtype = torch.float64
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(6, 3, generator=gen, dtype=dtype), torch.randn(4, 3, generator=gen, dtype=dtype)
    erf = gp_ntk.ErfKernel(weight_variance=0.8, bias_variance=0.0).to(dtype)
    deep = gp_ntk.NTKKernel(depth=1, activation="erf", weight_variance=[0.8 * 3, 1.0], bias_variance=0.0).to(
        dtype
    )
    with torch.no_grad():
        nngp, ntk = erf.nngp_and_ntk(x, y)
        expected_nngp, expected_ntk = deep.nngp_and_ntk(x, y)
        torch.testing.assert_close(nngp, erf(x, y).to_dense(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(nngp, expected_nngp, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ntk, expected_ntk, rtol=1e-12, atol=1e-14)
