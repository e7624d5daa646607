"""gp_ntk.networks: finite networks whose limits are the kernels."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, jacrev

import gp_ntk
from gp_ntk.networks import NetworkMLP, from_kernel

DTYPE = torch.float64


def _kernel(cls, **kwargs):
    kernel = cls(**kwargs).to(DTYPE)
    kernel.weight_variance = torch.tensor(kwargs.get("weight_variance", 1.0), dtype=DTYPE)
    if kwargs.get("bias_variance", 0.1) > 0:
        kernel.bias_variance = torch.tensor(kwargs.get("bias_variance", 0.1), dtype=DTYPE)
    return kernel


def _ntk(net, x):
    params = {k: v.detach() for k, v in net.named_parameters()}
    jac = jacrev(lambda p: functional_call(net, p, (x,)))(params)
    flat = torch.cat([j.reshape(x.shape[0], -1) for j in jac.values()], dim=1)
    return flat @ flat.T


def test_one_layer_output_covariance_is_exact_nngp():
    # depth 1: given the input layer, the read-out's conditional covariance averages to the
    # NNGP exactly; over many wide networks the sample covariance of the outputs approaches it.
    kernel = _kernel(gp_ntk.NNGPKernel, depth=1, activation="erf", weight_variance=2.0, bias_variance=0.2)
    x = torch.randn(4, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    outs = torch.stack([from_kernel(kernel, 3, 64, generator=gen)(x).detach() for _ in range(3000)])
    empirical = outs.T @ outs / outs.shape[0]
    expected = kernel(x).to_dense().detach()
    se = (outs.unsqueeze(-1) * outs.unsqueeze(-2)).std(0) / math.sqrt(outs.shape[0])
    assert ((empirical - expected).abs() / se).max() < 5.0


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_empirical_ntk_approaches_kernel_with_width(parameterization):
    kwargs = dict(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1)
    if parameterization == "standard":
        kwargs.update(parameterization="standard", width=2048)
    kernel = _kernel(gp_ntk.NTKKernel, **kwargs)
    x = torch.randn(5, 4, dtype=DTYPE, generator=torch.Generator().manual_seed(2))
    expected = kernel(x).to_dense().detach()
    gen = torch.Generator().manual_seed(3)
    errors = {}
    for width in (64, 2048):
        if parameterization == "standard":
            kernel.width = width
            expected = kernel(x).to_dense().detach()
        errs = [
            (
                torch.linalg.norm(_ntk(from_kernel(kernel, 4, width, generator=gen), x) - expected)
                / torch.linalg.norm(expected)
            ).item()
            for _ in range(3)
        ]
        errors[width] = sum(errs) / len(errs)
    assert errors[2048] < 0.1
    assert errors[2048] < 0.5 * errors[64]


def test_readout_free_network_and_shapes():
    net = NetworkMLP(3, 16, 2, "relu", out_features=4, generator=torch.Generator().manual_seed(0))
    x = torch.randn(7, 3)
    assert net(x).shape == (7, 4)
    hidden = NetworkMLP(3, 16, 2, "relu", readout=False)
    assert hidden(x).shape == (7, 16)
    assert len(hidden.layers) == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_features=0, width=4, depth=1), "in_features"),
        (dict(in_features=2, width=4, depth=1, weight_variance=[1.0, 2.0, 3.0]), "weight_variance"),
        (dict(in_features=2, width=4, depth=1, parameterization="mup"), "parameterization"),
        (dict(in_features=2, width=4, depth=1, input_weight_variance=[1.0]), "input_weight_variance"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NetworkMLP(**kwargs)


def test_from_kernel_copies_per_layer_and_ard_variances():
    kernel = gp_ntk.NNGPKernel(depth=2, weight_variance=[1.0, 2.0, 3.0], bias_variance=[0.1, 0.2, 0.3])
    net = from_kernel(kernel, 5, 8)
    assert torch.allclose(net._weight_scale_2, torch.full((8,), math.sqrt(3.0 / 8)))
    assert torch.allclose(net._bias_scale_1, torch.tensor(math.sqrt(0.2)))
    ard = gp_ntk.NNGPKernel(depth=1, ard_num_dims=2, bias_variance=0.0)
    ard.input_weight_variance = torch.tensor([[1.0, 4.0]])
    net = from_kernel(ard, 2, 8)
    assert torch.allclose(net._weight_scale_0, torch.tensor([math.sqrt(0.5), math.sqrt(2.0)]))
    with pytest.raises(ValueError, match="NNGPKernel or NTKKernel"):
        from_kernel(gp_ntk.ErfKernel(), 2, 8)
