"""Argument mappings to other libraries' kernels, checked numerically in float64.

* BoTorch's ``InfiniteWidthBNNKernel(depth=L)`` with ``weight_var = w``, ``bias_var = b`` is
  ``NNGPKernel(depth=L, activation="relu", weight_variance=w, bias_variance=b)``: same depth
  convention (number of hidden layers), same division of the first layer by the input
  dimension, same readout layer, no extra constant. BoTorch clamps the correlation to
  ``[-1 + acos_eps, 1 - acos_eps]``; with ``acos_eps=0`` the two agree to rounding.
* GPflow's ``ArcCosine(order, variance, weight_variances, bias_variance)`` is
  ``ScaleKernel(ArcCosineKernel(order, 1, weight_variances, bias_variance))`` with
  ``outputscale = variance``. GPflow is not a dependency: its documented formula is
  re-implemented below (:func:`gpflow_arccosine`).

Parameter values are set as float64 tensors after ``.to(torch.float64)``: a kernel built in
the default float32 (or a Python float assigned to a float64 parameter, which goes through
float32 in ``torch.as_tensor``) carries float32-rounded hyperparameters, a 1e-8 relative
difference that has nothing to do with the formulas under test.
"""

from __future__ import annotations

import math

import pytest
import torch
from botorch.models.kernels import InfiniteWidthBNNKernel
from gpytorch.kernels import ScaleKernel

import gp_ntk

DTYPE = torch.float64
RTOL = 1e-10
ATOL = 1e-12


def _t(value) -> torch.Tensor:
    return torch.as_tensor(value, dtype=DTYPE)


def _inputs(n: int, d: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator, dtype=DTYPE)


def _nngp(depth: int, weight_variance: float, bias_variance: float, **kwargs) -> gp_ntk.NNGPKernel:
    kernel = gp_ntk.NNGPKernel(
        depth=depth, activation="relu", weight_variance=1.0, bias_variance=1.0, **kwargs
    ).to(DTYPE)
    kernel.weight_variance = _t(weight_variance)
    kernel.bias_variance = _t(bias_variance)
    return kernel


def _ibnn(depth: int, weight_var: float, bias_var: float, acos_eps: float = 0.0, **kwargs):
    kernel = InfiniteWidthBNNKernel(depth=depth, acos_eps=acos_eps, **kwargs).to(DTYPE)
    kernel.weight_var = _t(weight_var)
    kernel.bias_var = _t(bias_var)
    return kernel


DEPTHS = [1, 2, 3, 5]
VARIANCES = [(1.0, 0.1), (2.0, 0.5), (0.7, 1e-3), (1.5, 2.0)]


# --------------------------------------------------------------------------- BoTorch IBNN


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("weight_variance, bias_variance", VARIANCES)
def test_ibnn_equals_nngp_relu_symmetric(depth, weight_variance, bias_variance):
    x = _inputs(12, 4, seed=depth)
    ours = _nngp(depth, weight_variance, bias_variance)(x).to_dense()
    theirs = _ibnn(depth, weight_variance, bias_variance)(x).to_dense()
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("weight_variance, bias_variance", VARIANCES)
def test_ibnn_equals_nngp_relu_diag(depth, weight_variance, bias_variance):
    x = _inputs(9, 3, seed=10 + depth)
    ours = _nngp(depth, weight_variance, bias_variance)(x, diag=True)
    theirs = _ibnn(depth, weight_variance, bias_variance)(x, diag=True)
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("weight_variance, bias_variance", VARIANCES)
def test_ibnn_equals_nngp_relu_cross(depth, weight_variance, bias_variance):
    x1, x2 = _inputs(8, 5, seed=20 + depth), _inputs(6, 5, seed=30 + depth)
    ours_kernel = _nngp(depth, weight_variance, bias_variance)
    theirs_kernel = _ibnn(depth, weight_variance, bias_variance)
    ours = ours_kernel(x1, x2).to_dense()
    theirs = theirs_kernel(x1, x2).to_dense()
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=ATOL)
    # Both use softplus-constrained raw parameters, so raw gradients are comparable too.
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(
        ours_kernel.raw_weight_variance.grad.reshape(()),
        theirs_kernel.raw_weight_var.grad.reshape(()),
        rtol=1e-9,
        atol=1e-12,
    )
    torch.testing.assert_close(
        ours_kernel.raw_bias_variance.grad.reshape(()),
        theirs_kernel.raw_bias_var.grad.reshape(()),
        rtol=1e-9,
        atol=1e-12,
    )


def test_ibnn_default_acos_eps_only_touches_the_diagonal():
    """BoTorch's default clamp (acos_eps=1e-7) shifts only entries with |cos| > 1 - 1e-7."""
    x = _inputs(10, 3, seed=3)
    ours = _nngp(3, 1.6, 0.2)(x).to_dense()
    theirs = _ibnn(3, 1.6, 0.2, acos_eps=1e-7)(x).to_dense()
    off = ~torch.eye(10, dtype=torch.bool)
    torch.testing.assert_close(ours[off], theirs[off], rtol=RTOL, atol=ATOL)
    relative = ((ours.diagonal() - theirs.diagonal()) / ours.diagonal()).abs()
    assert relative.max() < 1e-6
    # The clamp moves the diagonal away from cos = 1, so it is (slightly) below ours.
    assert bool((theirs.diagonal() <= ours.diagonal()).all())


def test_ibnn_batch_shape():
    batch = torch.Size([3])
    weights, biases = [0.8, 1.3, 2.1], [0.05, 0.4, 1.1]
    ours = gp_ntk.NNGPKernel(depth=2, activation="relu", batch_shape=batch).to(DTYPE)
    ours.weight_variance = _t(weights).unsqueeze(-1)
    ours.bias_variance = _t(biases).unsqueeze(-1)
    theirs = InfiniteWidthBNNKernel(depth=2, batch_shape=batch, acos_eps=0.0).to(DTYPE)
    theirs.weight_var = _t(weights).reshape(3, 1, 1)
    theirs.bias_var = _t(biases).reshape(3, 1, 1)
    x = _inputs(7, 2, seed=4).expand(3, 7, 2)
    torch.testing.assert_close(ours(x).to_dense(), theirs(x).to_dense(), rtol=RTOL, atol=ATOL)


def test_ibnn_depth_counts_hidden_layers():
    """No off-by-one: IBNN depth L differs from NNGPKernel depth L - 1 and L + 1."""
    x = _inputs(10, 3, seed=5)
    theirs = _ibnn(3, 1.5, 0.3)(x).to_dense()
    for depth in (2, 4):
        ours = _nngp(depth, 1.5, 0.3)(x).to_dense()
        assert (ours - theirs).abs().max() > 1e-3


# --------------------------------------------------------------------------- GPflow ArcCosine


def _gpflow_j(order: int, theta: torch.Tensor) -> torch.Tensor:
    # Cho & Saul (2009), eqs. 4-7, as GPflow's ArcCosine._J writes them.
    if order == 0:
        return math.pi - theta
    if order == 1:
        return torch.sin(theta) + (math.pi - theta) * torch.cos(theta)
    if order == 2:
        return 3.0 * torch.sin(theta) * torch.cos(theta) + (math.pi - theta) * (
            1.0 + 2.0 * torch.cos(theta) ** 2
        )
    raise ValueError(order)


def _weighted_product(x: torch.Tensor, y: torch.Tensor, weight_variances, bias_variance):
    return (_t(weight_variances) * x) @ y.T + bias_variance


def gpflow_arccosine(x, y, order, variance, weight_variances, bias_variance):
    r"""GPflow's documented ArcCosine kernel, from its definition.

    :math:`k = \sigma^2\frac1\pi J_n(\theta)\,X_2^{n/2} Y_2^{n/2}` with
    :math:`X_2 = \sum_i w_i x_i^2 + b`, :math:`\cos\theta = (\sum_i w_i x_i y_i + b)/\sqrt{X_2 Y_2}`.
    GPflow adds a 1e-15 jitter inside the arccos; it is left out here (its only effect is a
    ~1e-8 shift of J_0 at cos = 1).
    """
    w = _t(weight_variances)
    x2 = (w * x * x).sum(-1) + bias_variance
    y2 = (w * y * y).sum(-1) + bias_variance
    cos = _weighted_product(x, y, w, bias_variance) / torch.sqrt(x2[:, None] * y2[None, :])
    theta = torch.arccos(torch.clamp(cos, -1.0, 1.0))
    return (
        variance / math.pi * _gpflow_j(order, theta) * x2[:, None] ** (order / 2) * y2[None, :] ** (order / 2)
    )


def gpflow_arccosine_diag(x, order, variance, weight_variances, bias_variance):
    """GPflow's ``K_diag``: theta = 0 exactly."""
    x2 = (_t(weight_variances) * x * x).sum(-1) + bias_variance
    return variance / math.pi * _gpflow_j(order, torch.zeros((), dtype=DTYPE)) * x2**order


def _scaled_arccosine(order, variance, weight_variances, bias_variance):
    ard = not isinstance(weight_variances, float)
    base = gp_ntk.ArcCosineKernel(
        order=order,
        num_layers=1,
        weight_variance=1.0,
        bias_variance=1.0,
        ard_num_dims=len(weight_variances) if ard else None,
    )
    kernel = ScaleKernel(base).to(DTYPE)
    kernel.outputscale = _t(variance)
    base.bias_variance = _t(bias_variance)
    if ard:
        base.input_weight_variance = _t(weight_variances)
    else:
        base.weight_variance = _t(weight_variances)
    return kernel


GPFLOW_CASES = [
    (1.0, 1.0, 1.0),  # GPflow's defaults
    (2.5, 0.3, 0.7),
    (0.4, 3.0, 0.05),
    (1.7, [0.2, 1.0, 4.0, 0.6], 0.9),  # ARD
    (0.9, [2.0, 0.1, 0.5, 1.3], 2.0),  # ARD
]


def _assert_offdiag_and_diag(ours, reference, reference_diag):
    n = ours.shape[-1]
    off = ~torch.eye(n, dtype=torch.bool)
    torch.testing.assert_close(ours[off], reference[off], rtol=RTOL, atol=ATOL)
    # On the diagonal the naive reference's cos is 1 only to rounding, which arccos turns into
    # a 1e-8 angle; GPflow's own K_diag uses theta = 0, as does gp_ntk's k(X, X).
    torch.testing.assert_close(ours.diagonal(), reference_diag, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize("variance, weight_variances, bias_variance", GPFLOW_CASES)
def test_gpflow_arccosine_symmetric(order, variance, weight_variances, bias_variance):
    x = _inputs(11, 4, seed=40 + order)
    ours = _scaled_arccosine(order, variance, weight_variances, bias_variance)(x).to_dense()
    reference = gpflow_arccosine(x, x, order, variance, weight_variances, bias_variance)
    reference_diag = gpflow_arccosine_diag(x, order, variance, weight_variances, bias_variance)
    _assert_offdiag_and_diag(ours, reference, reference_diag)


@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize("variance, weight_variances, bias_variance", GPFLOW_CASES)
def test_gpflow_arccosine_diag(order, variance, weight_variances, bias_variance):
    x = _inputs(11, 4, seed=50 + order)
    ours = _scaled_arccosine(order, variance, weight_variances, bias_variance)(x, diag=True)
    reference = gpflow_arccosine_diag(x, order, variance, weight_variances, bias_variance)
    torch.testing.assert_close(ours, reference, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize("variance, weight_variances, bias_variance", GPFLOW_CASES)
def test_gpflow_arccosine_cross(order, variance, weight_variances, bias_variance):
    x1, x2 = _inputs(9, 4, seed=60 + order), _inputs(5, 4, seed=70 + order)
    ours = _scaled_arccosine(order, variance, weight_variances, bias_variance)(x1, x2).to_dense()
    reference = gpflow_arccosine(x1, x2, order, variance, weight_variances, bias_variance)
    torch.testing.assert_close(ours, reference, rtol=RTOL, atol=ATOL)


def test_gpflow_arccosine_ard_from_constructor():
    """The documented one-liner: per-feature weight variances passed to the constructor."""
    weights = [0.2, 1.0, 4.0]
    base = gp_ntk.ArcCosineKernel(1, 1, weights, 0.5, ard_num_dims=3)
    torch.testing.assert_close(
        base.input_weight_variance.detach().reshape(-1), torch.tensor(weights), rtol=1e-6, atol=0.0
    )
    # the per-feature variances are the only weights: no unused shared parameter is left over
    assert base.weight_variance is None and "raw_weight_variance" not in dict(base.named_parameters())
    with pytest.raises(
        ValueError, match=r"weight_variance: got 2 values; pass one number or ard_num_dims = 3 values"
    ):
        gp_ntk.ArcCosineKernel(1, 1, [1.0, 2.0], 0.5, ard_num_dims=3)


def test_gpflow_arccosine_zero_bias_zero_row():
    """Bias 0 (no bias parameter) and a zero input row: GPflow would give NaN there. gp_ntk
    takes cos = 0 against non-zero inputs, so k_0 = variance / 2 and k_n = 0 for n >= 1 in
    that row, and cos = 1 for the zero input against itself (k_0 = 1, k_n = 0)."""
    x = _inputs(6, 3, seed=80)
    x[2] = 0.0
    rows = [i for i in range(6) if i != 2]
    for order in (0, 1, 2):
        kernel = gp_ntk.ArcCosineKernel(order=order, num_layers=1, bias_variance=0.0).to(DTYPE)
        kernel.weight_variance = _t(1.0)
        k = kernel(x).to_dense()
        reference = gpflow_arccosine(x[rows], x[rows], order, 1.0, 1.0, 0.0)
        diag = gpflow_arccosine_diag(x[rows], order, 1.0, 1.0, 0.0)
        _assert_offdiag_and_diag(k[rows][:, rows], reference, diag)
        expected = torch.full((6,), 0.5 if order == 0 else 0.0, dtype=DTYPE)
        expected[2] = 1.0 if order == 0 else 0.0
        torch.testing.assert_close(k[2], expected, rtol=0, atol=1e-15)
        torch.testing.assert_close(kernel(x, diag=True), k.diagonal(), rtol=1e-15, atol=1e-15)


# --------------------------------------------------------------------------- internal relations


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("weight_variance", [0.6, 2.0, 3.0])
def test_bias_free_relu_nngp_is_scaled_multilayer_arccosine(depth, weight_variance):
    """NNGPKernel(L, relu, w, 0) = (w / 2)^L ArcCosineKernel(1, L, w / d, 0) (ReLU is 1-homogeneous)."""
    x = _inputs(10, 5, seed=90 + depth)
    d = x.shape[-1]
    nngp = gp_ntk.NNGPKernel(depth=depth, activation="relu", bias_variance=0.0).to(DTYPE)
    nngp.weight_variance = _t(weight_variance)
    arccos = gp_ntk.ArcCosineKernel(order=1, num_layers=depth, bias_variance=0.0).to(DTYPE)
    arccos.weight_variance = _t(weight_variance / d)
    expected = (weight_variance / 2) ** depth * arccos(x).to_dense()
    torch.testing.assert_close(nngp(x).to_dense(), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("weight_variance, bias_variance", [(1.0, 0.1), (2.0, 0.5), (0.3, 1.5)])
def test_one_layer_nngp_relu_and_erf_from_cho_saul_and_williams(weight_variance, bias_variance):
    """One hidden layer: NNGP = w * (Cho & Saul k_1 / 2 or Williams' erf kernel at w / d) + b."""
    x = _inputs(10, 4, seed=100)
    d = x.shape[-1]
    for activation, other, factor in (
        ("relu", gp_ntk.ArcCosineKernel(order=1), 0.5),
        ("erf", gp_ntk.ErfKernel(), 1.0),
    ):
        nngp = gp_ntk.NNGPKernel(depth=1, activation=activation).to(DTYPE)
        nngp.weight_variance = _t(weight_variance)
        nngp.bias_variance = _t(bias_variance)
        other = other.to(DTYPE)
        other.weight_variance = _t(weight_variance / d)
        other.bias_variance = _t(bias_variance)
        expected = weight_variance * factor * other(x).to_dense() + bias_variance
        torch.testing.assert_close(nngp(x).to_dense(), expected, rtol=RTOL, atol=ATOL)
