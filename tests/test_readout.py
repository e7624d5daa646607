r"""Deep network kernels without read-out layer (``readout=False``).

The network ``stax.serial(*[Dense(W_std, b_std), act] * L)`` ends at its last activation. Its
kernels are those of one output unit, :math:`\mathbb E[\phi(u)\phi(v)]` and
:math:`\mathbb E[\phi'(u)\phi'(v)]\,\Theta^{(L)}` under :math:`\Sigma^{(L)}`; with a read-out
layer of variances :math:`(w, b)` after it the kernels would be
:math:`\mathcal K = w\,\mathbb E[\phi\phi] + b` and :math:`\Theta = \mathcal K + w\,\mathbb
E[\phi'\phi']\,\Theta^{(L)}`, which the tests here invert as an independent oracle.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch
from _helpers import NT_PYTHON, kernel_function, neural_tangents_available
from torch.func import functional_call, jacrev

import gp_ntk
from gp_ntk.activations import ACTIVATIONS, ArcCos, Numerical
from gp_ntk.kernels.grad import gradient_kernel_by_autograd

DTYPE = torch.float64


def _activations() -> dict:
    found = {name: make() for name, make in ACTIVATIONS.items()}
    found["arccos2"] = ArcCos(2)
    found["numerical-tanh"] = Numerical(torch.tanh, degree=12)
    return found


ACTIVATION_OBJECTS = _activations()


def _points(n: int, d: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=DTYPE)


def _pair(cls, depth, activation, weights, biases, **kwargs):
    """The kernel with read-out (variances ``weights``, ``biases``, depth + 1 of each) and the
    one without (the first ``depth`` of each)."""
    with_readout = cls(depth, activation, weights, biases, **kwargs).to(DTYPE)
    without = cls(depth, activation, weights[:depth], biases[:depth], readout=False, **kwargs).to(DTYPE)
    return with_readout, without


# ----------------------------------------------------------------------------- closed forms


def _first_layer(x, y, w, b):
    d = x.shape[-1]
    cov = w / d * x @ y.T + b
    var_x = w / d * (x * x).sum(-1) + b
    var_y = w / d * (y * y).sum(-1) + b
    return var_x.unsqueeze(-1), cov, var_y.unsqueeze(-2)


@pytest.mark.parametrize("bias", [0.0, 0.3])
def test_relu_depth_one_is_the_arc_cosine_form(bias):
    # E[relu(u) relu(v)] = s1 s2 (sin t + (pi - t) cos t) / (2 pi), E[step(u) step(v)] = (pi - t) / (2 pi)
    x, y = _points(6), _points(5, seed=1)
    w = 1.7
    var_x, cov, var_y = _first_layer(x, y, w, bias)
    s = torch.sqrt(var_x * var_y)
    t = torch.arccos((cov / s).clamp(-1, 1))
    nngp = s * (torch.sin(t) + (math.pi - t) * torch.cos(t)) / (2 * math.pi)
    ntk = (math.pi - t) / (2 * math.pi) * cov
    kernel = gp_ntk.NTKKernel(1, "relu", w, bias, readout=False).to(DTYPE)
    ours_nngp, ours_ntk = kernel.nngp_and_ntk(x, y)
    torch.testing.assert_close(ours_nngp, nngp, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(ours_ntk, ntk, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(
        gp_ntk.NNGPKernel(1, "relu", w, bias, readout=False).to(DTYPE)(x, y).to_dense(), nngp
    )


@pytest.mark.parametrize("bias", [0.0, 0.3])
def test_erf_depth_one_is_williams_arcsine_form(bias):
    # Williams (1997): E[erf(u) erf(v)] = 2/pi asin(2 c / sqrt((1 + 2 a)(1 + 2 b))), and with
    # erf' = 2/sqrt(pi) exp(-u^2): E[erf'(u) erf'(v)] = 4/pi / sqrt((1 + 2 a)(1 + 2 b) - 4 c^2)
    x, y = _points(6), _points(5, seed=1)
    w = 2.3
    a, c, b = _first_layer(x, y, w, bias)
    nngp = 2 / math.pi * torch.asin(2 * c / torch.sqrt((1 + 2 * a) * (1 + 2 * b)))
    ntk = 4 / math.pi / torch.sqrt((1 + 2 * a) * (1 + 2 * b) - 4 * c * c) * c
    kernel = gp_ntk.NTKKernel(1, "erf", w, bias, readout=False).to(DTYPE)
    ours_nngp, ours_ntk = kernel.nngp_and_ntk(x, y)
    torch.testing.assert_close(ours_nngp, nngp, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(ours_ntk, ntk, rtol=1e-14, atol=1e-15)


# ----------------------------------------------------------------------------- against the read-out kernels


def _identity_error(with_readout, without, x1, x2, w, b, diag=False):
    """Largest error of the read-out-free kernels against the inverted read-out identity,
    relative to the read-out-free kernels' largest value."""
    with torch.no_grad():
        nngp, ntk = with_readout.nngp_and_ntk(x1, x2, diag=diag)
        free_nngp, free_ntk = without.nngp_and_ntk(x1, x2, diag=diag)
    expected_nngp = (nngp - b) / w
    if with_readout.parameterization == "standard":
        # Theta = n E[phi phi] + 1_b + w E[phi' phi'] Theta^(L)
        expected_ntk = (ntk - with_readout.width * expected_nngp - (1.0 if b else 0.0)) / w
    else:
        expected_ntk = (ntk - nngp) / w
    errors = []
    for ours, expected in ((free_nngp, expected_nngp), (free_ntk, expected_ntk)):
        scale = expected.abs().max().clamp_min(1e-300)
        errors.append(float((ours - expected).abs().max() / scale))
    return max(errors)


@pytest.mark.parametrize("name", sorted(ACTIVATION_OBJECTS))
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("bias", [0.0, 0.2])
def test_agrees_with_the_readout_identity(name, depth, bias):
    activation = ACTIVATION_OBJECTS[name]
    # (exp's variance map exp(v) overflows after three layers of larger weights)
    weights = [v * (0.3 if name == "exp" else 1.0) for v in (1.3, 0.9, 1.6, 1.2)][: depth + 1]
    # a read-out weight variance of 0.5 and bias variance 0.25: subtracting and dividing them
    # out of the read-out kernels loses at most a few ulps
    weights[depth] = 0.5
    biases = [bias * v for v in (1.0, 0.5, 1.5, 1.25)][: depth + 1] if bias else 0.0
    x, y = _points(7), _points(5, seed=1)
    worst = 0.0
    for cls in (gp_ntk.NNGPKernel, gp_ntk.NTKKernel):
        with_readout, without = _pair(
            cls, depth, activation, weights, biases if bias else [0.0] * (depth + 1)
        )
        b = biases[depth] if bias else 0.0
        worst = max(
            worst,
            _identity_error(with_readout, without, x, y, weights[depth], b),
            _identity_error(with_readout, without, x, x, weights[depth], b),
            _identity_error(with_readout, without, x, x, weights[depth], b, diag=True),
            _identity_error(with_readout, without, x, x.flip(0), weights[depth], b, diag=True),
        )
    assert worst < 1e-12, f"{name}, depth {depth}, bias {bias}: relative error {worst:.2e}"


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("bias", [0.0, 0.1])
def test_standard_parameterization_against_the_readout_identity(activation, bias):
    weights, biases = [1.5, 2.0, 0.5], [bias, 2 * bias, 0.25 if bias else 0.0]
    with_readout, without = _pair(
        gp_ntk.NTKKernel, 2, activation, weights, biases, parameterization="standard", width=64
    )
    x, y = _points(6), _points(4, seed=2)
    assert _identity_error(with_readout, without, x, y, 0.5, biases[2]) < 1e-12
    assert _identity_error(with_readout, without, x, x, 0.5, biases[2], diag=True) < 1e-12


def test_ard_kernels_against_the_readout_identity():
    x, y = _points(6), _points(4, seed=2)
    ard = torch.tensor([0.5, 1.5, 2.5], dtype=DTYPE)
    for depth in (1, 2):
        # with ARD the per-layer weight variances are those of layers 2 .. depth + 1
        with_readout = gp_ntk.NTKKernel(depth, "gelu", [1.2] * (depth - 1) + [0.5], 0.1, ard_num_dims=3).to(
            DTYPE
        )
        if depth == 1:
            without = gp_ntk.NTKKernel(1, "gelu", 1.0, 0.1, ard_num_dims=3, readout=False).to(DTYPE)
            assert without.weight_variance is None  # the ARD layer is its only affine layer
        else:
            without = gp_ntk.NTKKernel(depth, "gelu", [1.2], 0.1, ard_num_dims=3, readout=False).to(DTYPE)
        with_readout.input_weight_variance = ard
        without.input_weight_variance = ard
        assert _identity_error(with_readout, without, x, y, 0.5, 0.1) < 1e-12


def test_large_readout_variances_do_not_enter():
    # with a read-out bias variance of 1e8, (K - b) / w keeps about eight digits; the
    # read-out-free kernel computes E[phi phi] directly and keeps all of them
    x = _points(5)
    without = gp_ntk.NNGPKernel(1, "erf", 1.0, 0.1, readout=False).to(DTYPE)
    with_readout = gp_ntk.NNGPKernel(1, "erf", [1.0, 1e-8], [0.1, 1e8]).to(DTYPE)
    subtracted = (with_readout(x).to_dense() - 1e8) / 1e-8
    a, c, b = _first_layer(x, x, 1.0, 0.1)
    exact = 2 / math.pi * torch.asin(2 * c / torch.sqrt((1 + 2 * a) * (1 + 2 * b)))
    torch.testing.assert_close(without(x).to_dense(), exact, rtol=1e-14, atol=1e-15)
    assert float((subtracted - exact).abs().max()) > 1e-10  # what the subtraction would lose


# ----------------------------------------------------------------------------- evaluation paths


def test_evaluation_paths_agree():
    kernel = gp_ntk.NTKKernel(3, "erf", [1.2, 1.5, 0.8], [0.1, 0.2, 0.3], readout=False).to(DTYPE)
    relu = gp_ntk.NTKKernel(2, "relu", 2.0, 0.1, readout=False).to(DTYPE)
    x, y = _points(13), _points(9, seed=3)
    for k in (kernel, relu):
        with gp_ntk.settings.block_evaluation(min_elements=10**12):
            one_piece = k(x, y).to_dense()
            square = k(x).to_dense()
        with gp_ntk.settings.block_evaluation(min_elements=0, block_elements=20):
            torch.testing.assert_close(k(x, y).to_dense(), one_piece, rtol=1e-14, atol=0.0)
        with gp_ntk.settings.lazy_evaluation("always", block_elements=20):
            lazy = k(x, y)
            assert not isinstance(lazy, torch.Tensor)
            torch.testing.assert_close(lazy.to_dense(), one_piece, rtol=1e-14, atol=0.0)
            v = torch.randn(9, 2, dtype=DTYPE)
            torch.testing.assert_close(lazy @ v, one_piece @ v, rtol=1e-12, atol=1e-14)
        assert torch.equal(square, square.mT)
        torch.testing.assert_close(k(x, diag=True), square.diagonal(), rtol=1e-14, atol=0.0)
        torch.testing.assert_close(k(x, x.flip(0), diag=True), k(x, x.flip(0)).to_dense().diagonal())


@pytest.mark.slow
def test_compiled_evaluation_agrees():
    kernel = gp_ntk.NTKKernel(2, "erf", 1.5, 0.1, readout=False).to(DTYPE)
    x = _points(40)
    with torch.no_grad():
        with gp_ntk.settings.block_evaluation(min_elements=10**12):
            eager = kernel.nngp_and_ntk(x, x)
        with (
            gp_ntk.settings.block_evaluation(min_elements=0, block_elements=400),
            gp_ntk.settings.compile_kernels("always"),
        ):
            compiled = kernel.nngp_and_ntk(x, x)
    for got, expected in zip(compiled, eager):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_batch_shape_and_last_dim_is_batch():
    kernel = gp_ntk.NTKKernel(2, "gelu", 1.5, 0.1, readout=False, batch_shape=torch.Size([2])).to(DTYPE)
    kernel.weight_variance = torch.tensor([[1.5], [0.7]], dtype=DTYPE)
    x = _points(5)
    batched = kernel(x).to_dense()
    assert batched.shape == (2, 5, 5)
    for i, w in enumerate((1.5, 0.7)):
        single = gp_ntk.NTKKernel(2, "gelu", w, 0.1, readout=False).to(DTYPE)
        torch.testing.assert_close(batched[i], single(x).to_dense(), rtol=1e-14, atol=0.0)
    plain = gp_ntk.NNGPKernel(2, "erf", 1.5, 0.1, readout=False).to(DTYPE)
    per_feature = plain(x, last_dim_is_batch=True).to_dense()
    for j in range(x.shape[-1]):
        torch.testing.assert_close(per_feature[j], plain(x[:, j : j + 1]).to_dense(), rtol=1e-14, atol=0.0)


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("cls", [gp_ntk.NNGPKernel, gp_ntk.NTKKernel])
def test_gradcheck_inputs_and_variances(activation, cls):
    kernel = cls(2, activation, [1.4, 0.8], [0.2, 0.1], readout=False).to(DTYPE)
    fn, params = kernel_function(kernel)
    x = _points(5).requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (x, *params))
    if activation == "relu":  # the fused recursion's second derivative, by the generic one
        assert torch.autograd.gradgradcheck(fn, (x, *params))

    def diagonal(x, *raw):
        names = [name for name, _ in kernel.named_parameters()]
        return functional_call(kernel, dict(zip(names, raw)), (x, x.flip(0)), {"diag": True})

    assert torch.autograd.gradcheck(diagonal, (x, *params))


@pytest.mark.parametrize("cls", [gp_ntk.NNGPKernelGrad, gp_ntk.NTKKernelGrad])
def test_gradient_kernels(cls):
    values = {gp_ntk.NNGPKernelGrad: gp_ntk.NNGPKernel, gp_ntk.NTKKernelGrad: gp_ntk.NTKKernel}[cls]
    options = {
        "depth": 2,
        "activation": "erf",
        "weight_variance": 1.7,
        "bias_variance": 0.2,
        "readout": False,
    }
    kernel, reference = cls(**options).to(DTYPE), values(**options).to(DTYPE)
    x, y = _points(4), _points(3, seed=1)
    torch.testing.assert_close(
        kernel(x, y).to_dense(), gradient_kernel_by_autograd(reference, x, y), rtol=1e-12, atol=1e-14
    )


# ----------------------------------------------------------------------------- structure and arguments


def test_structure_repr_pickle_and_state_dict():
    kernel = gp_ntk.NTKKernel(2, "erf", [1.2, 1.5], [0.1, 0.2], readout=False).to(DTYPE)
    assert kernel.readout is False and "readout=False" in repr(kernel)
    assert "readout" not in repr(gp_ntk.NTKKernel(2, "erf"))
    x = _points(4)
    copy = pickle.loads(pickle.dumps(kernel))
    assert copy.readout is False
    assert torch.equal(copy(x).to_dense(), kernel(x).to_dense())
    fresh = gp_ntk.NTKKernel(2, "erf", [1.0, 1.0], [0.3, 0.3], readout=False).to(DTYPE)
    fresh.load_state_dict(kernel.state_dict())
    assert torch.equal(fresh(x).to_dense(), kernel(x).to_dense())
    # the same parameter shapes with a read-out: refused by structure, nothing loaded
    other = gp_ntk.NTKKernel(1, "erf", [1.0, 1.0], [0.3, 0.3]).to(DTYPE)
    other_depth = gp_ntk.NTKKernel(2, "erf", [1.0, 1.0, 1.0], [0.3, 0.3, 0.3]).to(DTYPE)
    for target in (other, other_depth):
        before = {k: v.clone() for k, v in target.state_dict().items()}
        with pytest.raises(RuntimeError, match="readout"):
            target.load_state_dict(kernel.state_dict())
        assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_readout_state_dicts_keep_their_encoding():
    # a read-out kernel stores no readout entry, so state dicts saved before the option load
    from gp_ntk.kernels._contract import STRUCTURE_KEY, decode_structure

    saved = gp_ntk.NNGPKernel(2, "relu").state_dict()
    assert "readout" not in decode_structure(saved[STRUCTURE_KEY])
    assert (
        decode_structure(gp_ntk.NNGPKernel(2, "relu", readout=False).state_dict()[STRUCTURE_KEY])["readout"]
        is False
    )


@pytest.mark.parametrize("value", [1, 0, "False", None, 1.0, torch.tensor(True)])
def test_readout_must_be_a_bool(value):
    with pytest.raises(ValueError, match="readout must be a bool"):
        gp_ntk.NTKKernel(2, "relu", readout=value)


def test_per_layer_counts_name_the_missing_readout():
    gp_ntk.NNGPKernel(2, "relu", [1.0, 2.0], [0.1, 0.2], readout=False)
    with pytest.raises(ValueError, match=r"depth = 2 per-layer values .*no read-out layer"):
        gp_ntk.NNGPKernel(2, "relu", [1.0, 2.0, 3.0], 0.1, readout=False)
    with pytest.raises(ValueError, match=r"depth = 2 per-layer values .*no read-out layer"):
        gp_ntk.NNGPKernel(2, "relu", 1.0, [0.1, 0.2, 0.3], readout=False)
    with pytest.raises(ValueError, match=r"depth - 1 = 1 per-layer values"):
        gp_ntk.NNGPKernel(2, "relu", [1.0, 2.0], 0.1, ard_num_dims=3, readout=False)
    kernel = gp_ntk.NNGPKernel(2, "relu", [1.0, 2.0], [0.1, 0.2], readout=False)
    with pytest.raises(ValueError, match="no read-out layer"):
        kernel.weight_variance = torch.ones(3)


def test_other_entry_points():
    kernel = gp_ntk.models.make_kernel("ntk", readout=False)
    assert isinstance(kernel, gp_ntk.NTKKernel) and kernel.readout is False
    net = gp_ntk.networks.from_kernel(
        gp_ntk.NNGPKernel(2, "erf", [1.0, 2.0], [0.1, 0.2], readout=False), 3, 8
    )
    assert net.readout is False and net(torch.randn(4, 3)).shape == (4, 8)
    with pytest.raises(ValueError, match="readout=False"):
        gp_ntk.networks.from_kernel(gp_ntk.NNGPKernel(2, readout=False), 3, 8, readout=True)
    with pytest.raises(ValueError, match="read-out"):
        gp_ntk.RandomFeatureKernel(gp_ntk.NTKKernel(2, readout=False), num_features=500, in_features=3)
    unit = gp_ntk.UnitVarianceKernel(gp_ntk.NNGPKernel(2, "erf", 1.5, 0.1, readout=False))
    torch.testing.assert_close(unit(_points(4).float(), diag=True), torch.ones(4))


def test_random_features_without_readout():
    kernel = gp_ntk.NNGPKernel(2, "erf", [1.5, 2.0], [0.1, 0.2], readout=False).to(DTYPE)
    x = _points(6)
    features = gp_ntk.RandomFeatureKernel(kernel, num_features=2000, in_features=3)
    with torch.no_grad():
        exact = kernel(x).to_dense()
        error = float((features(x).to_dense() - exact).abs().max())
    # entrywise error O(1/sqrt(D)): 2000 features give a few percent of the diagonal
    assert error < 0.1 * float(exact.diagonal().max())
    # without the read-out there is no constant feature (no read-out bias)
    assert features.num_outputs == 2000


# ----------------------------------------------------------------------------- finite networks


@pytest.mark.slow
@pytest.mark.parametrize("activation,weight_variance", [("relu", 2.0), ("erf", 1.5)])
@pytest.mark.parametrize("depth", [1, 2])
def test_nngp_matches_finite_network_units(activation, weight_variance, depth):
    """Mean of :math:`h_i(x)h_i(y)` over the units of independent wide networks.

    The units of one network are exchangeable, not independent, so each network gives one
    estimate (its mean over units) and the standard error is taken across networks. Measured
    max |z|: relu 2.04 / 1.17, erf 2.07 / 1.84 (depth 1 / 2); largest error 0.3-0.7% of the
    largest entry.
    """
    num_networks, width = 128, 1024
    kernel = gp_ntk.NNGPKernel(depth, activation, weight_variance, 0.1, readout=False).to(DTYPE)
    x = _points(6)
    generator = torch.Generator().manual_seed(11 + depth)
    estimates = []
    with torch.no_grad():
        expected = kernel(x).to_dense()
        for _ in range(num_networks):
            h = gp_ntk.networks.from_kernel(kernel, 3, width, generator=generator)(x)
            estimates.append(h @ h.T / width)
    estimates = torch.stack(estimates)
    mean, se = estimates.mean(0), estimates.std(0) / math.sqrt(num_networks)
    # the finite-width bias of the mean is O((depth - 1) / width) relative: allowed for in full
    bias = (depth - 1) / width * expected.abs().max()
    z = (((mean - expected).abs() - bias).clamp_min(0) / se).max()
    relative = float((mean - expected).abs().max() / expected.abs().max())
    print(f"\nNNGP {activation} depth {depth}: max z = {float(z):.2f}, relative error {relative:.2e}")
    assert z < 5.0, f"max z = {float(z):.2f}\n{expected}\n{mean}\n{se}"
    for wrong in (1.05, 1 / 1.05):
        assert ((mean - wrong * expected).abs() / se).max() > 5.0, f"kernel x {wrong:.3f} not rejected"


def _fixed_readout_ntk(net, x: torch.Tensor, readout: torch.Tensor) -> torch.Tensor:
    r"""Empirical NTK of :math:`v^\top h(x)/\sqrt n`, the network's parameters only (``v`` fixed).

    One unit's own tangent kernel :math:`\nabla h_i(x)^\top\nabla h_i(y)` does not concentrate
    (it carries the random factor :math:`\phi'(z_i(x))\phi'(z_i(y))`); its mean over the units
    does, and that mean is what a fixed random read-out of unit variance computes.
    """
    params = {k: v.detach() for k, v in net.named_parameters()}
    width = readout.shape[0]
    jac = jacrev(lambda p: functional_call(net, p, (x,)) @ readout / math.sqrt(width))(params)
    flat = torch.cat([j.reshape(x.shape[0], -1) for j in jac.values()], dim=-1)
    return flat @ flat.T


@pytest.mark.slow
@pytest.mark.parametrize("activation,weight_variance", [("relu", 2.0), ("erf", 1.5)])
def test_ntk_matches_empirical_ntk_with_a_fixed_readout(activation, weight_variance):
    r"""Empirical NTK of wide depth-2 networks without read-out (through a frozen random
    read-out, :func:`_fixed_readout_ntk`) against ``NTKKernel(readout=False)``: the error must
    shrink with width and, at width 1024, the seed-averaged NTK must agree within its
    seed-to-seed standard error (as in ``tests/test_monte_carlo.py``). Measured mean relative
    Frobenius errors at widths 64 / 1024: relu 0.34 / 0.082, erf 0.23 / 0.075; the averaged NTK
    is 3.4% (relu) and 2.9% (erf) off, within 1.6 and 1.5 of its standard errors.
    """
    depth, seeds = 2, 16
    kernel = gp_ntk.NTKKernel(depth, activation, weight_variance, 0.1, readout=False).to(DTYPE)
    x = _points(5)
    with torch.no_grad():
        expected = kernel(x).to_dense()
    norm = torch.linalg.matrix_norm(expected)
    errors, widest = {}, None
    for width in (64, 1024):
        generator = torch.Generator().manual_seed(width + len(activation))
        ntks = []
        for _ in range(seeds):
            net = gp_ntk.networks.from_kernel(kernel, 3, width, generator=generator)
            readout = torch.randn(width, generator=generator, dtype=DTYPE)
            ntks.append(_fixed_readout_ntk(net, x, readout))
        ntks = torch.stack(ntks)
        errors[width] = float((torch.linalg.matrix_norm(ntks - expected) / norm).mean())
        widest = ntks
    error = float(torch.linalg.matrix_norm(widest.mean(0) - expected) / norm)
    se = float(torch.linalg.matrix_norm(widest.std(0) / math.sqrt(seeds)) / norm)
    print(f"\nNTK {activation}: mean relative errors {errors}, averaged {error:.4f} (SE {se:.4f})")
    assert errors[1024] < 0.5 * errors[64], errors
    assert error < 4.0 * se + depth / 1024, f"{error=:.4f}, {se=:.4f}, {errors=}"


# ----------------------------------------------------------------------------- neural-tangents

_NT_PROGRAM = r"""
import json, sys
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
from neural_tangents import stax

spec = json.loads(sys.argv[1])
x1, x2 = np.asarray(spec["x1"]), np.asarray(spec["x2"])
out = {}
for case in spec["cases"]:
    act = {"erf": stax.Erf(), "relu": stax.Relu()}[case["activation"]]
    layers = []
    for _ in range(case["depth"]):
        dense = stax.Dense(case.get("width", 1), case["W_std"], case["b_std"], parameterization=case["parameterization"])
        layers += [dense, act]
    _, _, kernel_fn = stax.serial(*layers)
    k = kernel_fn(x1, x2, ("nngp", "ntk"))
    out[case["name"]] = {"nngp": np.asarray(k.nngp).tolist(), "ntk": np.asarray(k.ntk).tolist()}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_agrees_with_neural_tangents():
    """``stax.serial(Dense(1, W_std, b_std), Erf())`` and a depth-2 ReLU network without read-out.

    Measured max difference relative to the largest value: see the printed table (2e-15 or less).
    """
    if not neural_tangents_available():
        pytest.skip(f"neural_tangents not importable by {NT_PYTHON}")
    x1, x2 = _points(6, d=4), _points(5, d=4, seed=1)
    cases = [
        {
            "name": "erf1",
            "activation": "erf",
            "depth": 1,
            "W_std": 1.3,
            "b_std": 0.4,
            "parameterization": "ntk",
        },
        {
            "name": "erf1-nobias",
            "activation": "erf",
            "depth": 1,
            "W_std": 0.9,
            "b_std": 0.0,
            "parameterization": "ntk",
        },
        {
            "name": "relu2",
            "activation": "relu",
            "depth": 2,
            "W_std": 1.4,
            "b_std": 0.3,
            "parameterization": "ntk",
        },
        {
            "name": "erf2",
            "activation": "erf",
            "depth": 2,
            "W_std": 1.1,
            "b_std": 0.2,
            "parameterization": "ntk",
        },
        {
            "name": "relu2-standard",
            "activation": "relu",
            "depth": 2,
            "W_std": 1.4,
            "b_std": 0.3,
            "parameterization": "standard",
            "width": 64,
        },
    ]
    spec = json.dumps({"x1": x1.tolist(), "x2": x2.tolist(), "cases": cases})
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run(
        [str(NT_PYTHON), "-c", _NT_PROGRAM, spec], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    reference = json.loads(run.stdout.strip().splitlines()[-1])
    worst = 0.0
    for case in cases:
        kernel = gp_ntk.NTKKernel(
            case["depth"],
            case["activation"],
            case["W_std"] ** 2,
            case["b_std"] ** 2,
            parameterization=case["parameterization"],
            width=case.get("width"),
            readout=False,
        ).to(DTYPE)
        with torch.no_grad():
            nngp, ntk = kernel.nngp_and_ntk(x1, x2)
        for ours, key in ((nngp, "nngp"), (ntk, "ntk")):
            theirs = torch.as_tensor(np.asarray(reference[case["name"]][key]), dtype=DTYPE)
            difference = float((ours - theirs).abs().max() / theirs.abs().max())
            worst = max(worst, difference)
            print(f"{case['name']} {key}: max |ours - theirs| / max |theirs| = {difference:.2e}")
            torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-14 * float(theirs.abs().max()))
    print(f"neural-tangents, no read-out: max relative difference {worst:.2e}")
