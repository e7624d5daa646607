"""The fused ReLU-family (and rectified-square) recursion against the generic one, its second
derivatives and threads."""

from __future__ import annotations

import inspect

import pytest
import torch

import gp_ntk
from gp_ntk.activations import ArcCos
from gp_ntk.ops import relu_family


def _generic(monkeypatch):
    # the generic recursion: hide the activation's fused-recursion coefficients
    from gp_ntk import recursion

    monkeypatch.setattr(recursion, "fused_block_coefficients", lambda activation: None)


CASES = [
    (gp_ntk.NTKKernel, {}),
    (gp_ntk.NNGPKernel, {}),
    (gp_ntk.NTKKernel, {"bias_variance": 0.0}),
    (gp_ntk.NTKKernel, {"parameterization": "standard", "width": 7}),
    (gp_ntk.NTKKernel, {"per_layer": True, "weight_variance": [1.5, 2.0, 2.5, 1.0]}),
    (gp_ntk.NTKKernel, {"ard_num_dims": 5}),
    (gp_ntk.NTKKernel, {"activation": "abs"}),
    (gp_ntk.NTKKernel, {"activation": gp_ntk.activations.ABReLU(-0.5, 1.5)}),
    (gp_ntk.NTKKernel, {"batch_shape": torch.Size([2])}),
    # the rectified monomials of orders 1 and 2 (a symmetric block of order 2, with its pairs
    # of identical points, takes the generic recursion either way)
    (gp_ntk.NTKKernel, {"activation": ArcCos(1)}),
    (gp_ntk.NTKKernel, {"activation": ArcCos(2)}),
    (gp_ntk.NNGPKernel, {"activation": ArcCos(2)}),
    (gp_ntk.NTKKernel, {"activation": ArcCos(2), "bias_variance": 0.0}),
    (gp_ntk.NTKKernel, {"activation": ArcCos(2), "parameterization": "standard", "width": 7}),
    (gp_ntk.NTKKernel, {"activation": ArcCos(2), "per_layer": True, "weight_variance": [1.5, 2.0, 2.5, 1.0]}),
]


def _values_and_gradients(cls, kwargs, x1, x2):
    kwargs = dict(kwargs)
    activation = kwargs.pop("activation", "relu")
    kernel = cls(3, activation, **{"weight_variance": 2.0, **kwargs}).double()
    a = x1.clone().requires_grad_(True)
    b = a if x2 is None else x2.clone().requires_grad_(True)
    matrix = kernel(a, b).to_dense()
    weights = torch.randn(matrix.shape, dtype=matrix.dtype, generator=torch.Generator().manual_seed(3))
    inputs = [a] + ([] if b is a else [b]) + list(kernel.parameters())
    return matrix.detach(), torch.autograd.grad((weights * matrix).sum(), inputs)


def _assert_fused_matches_generic(monkeypatch, cls, kwargs, x1, x2):
    fused = _values_and_gradients(cls, kwargs, x1, x2)
    with monkeypatch.context() as patch:
        _generic(patch)
        generic = _values_and_gradients(cls, kwargs, x1, x2)
    torch.testing.assert_close(fused[0], generic[0], rtol=1e-13, atol=1e-14)
    for got, expected in zip(fused[1], generic[1]):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("cls, kwargs", CASES)
@pytest.mark.parametrize("symmetric", [True, False])
def test_fused_matches_generic_values_and_gradients(monkeypatch, cls, kwargs, symmetric):
    generator = torch.Generator().manual_seed(0)
    x1 = torch.randn(17, 5, dtype=torch.float64, generator=generator)
    x1[3] = x1[1]  # a duplicate point: correlation 1
    x1[4] = -x1[2]  # an antipodal pair: correlation -1
    x2 = None if symmetric else torch.randn(11, 5, dtype=torch.float64, generator=generator)
    _assert_fused_matches_generic(monkeypatch, cls, kwargs, x1, x2)


def _fused_calls(monkeypatch) -> list:
    """The ``order`` of every call of the fused recursion from here on."""
    from gp_ntk import recursion

    calls = []
    original = recursion.relu_family_recursion

    def recording(*args, **kwargs):
        calls.append(inspect.signature(original).bind(*args, **kwargs).arguments.get("order", 1))
        return original(*args, **kwargs)

    monkeypatch.setattr(recursion, "relu_family_recursion", recording)
    return calls


@pytest.mark.parametrize("symmetric", [True, False])
def test_fused_matches_generic_at_zero_variances(monkeypatch, symmetric):
    # without biases a zero input has variance 0 in every layer: its reciprocal statistics are
    # 0, and the backward pass takes each reciprocal from the other statistic's column
    generator = torch.Generator().manual_seed(4)
    x1 = torch.randn(9, 4, dtype=torch.float64, generator=generator)
    x1[2] = 0.0
    x2 = None
    if not symmetric:
        x2 = torch.randn(6, 4, dtype=torch.float64, generator=generator)
        x2[1] = 0.0
    _assert_fused_matches_generic(monkeypatch, gp_ntk.NTKKernel, {"bias_variance": 0.0}, x1, x2)


def _rectified_square(name: str, **kwargs) -> tuple:
    """The class and options of a rectified-square kernel: the NTK (``"ntk"``, ``"standard"``
    parameterization) or the NNGP."""
    kwargs = {"activation": ArcCos(2), **kwargs}
    if name == "standard":
        kwargs.update(parameterization="standard", width=5)
    return (gp_ntk.NNGPKernel if name == "nngp" else gp_ntk.NTKKernel), kwargs


def _assert_fused_square_matches_generic(monkeypatch, cls, kwargs, x1, x2):
    with monkeypatch.context() as patch:
        calls = _fused_calls(patch)
        _assert_fused_matches_generic(monkeypatch, cls, kwargs, x1, x2)
    assert 2 in calls  # (the fused recursion of order 2 did run)


@pytest.mark.parametrize("name", ["ntk", "nngp", "standard"])
def test_rectified_square_fused_at_zero_variances_and_parallel_points(monkeypatch, name):
    # a cross block (the fused recursion of order 2; a zero row on both sides would be a pair
    # of identical points, which takes the generic one): a zero-variance row, and columns
    # parallel and antiparallel to rows, at correlations +-1 and clipped beyond them
    generator = torch.Generator().manual_seed(9)
    x1 = torch.randn(7, 4, dtype=torch.float64, generator=generator)
    x1[2] = 0.0
    x2 = torch.cat(
        [2.0 * x1[:1], -3.0 * x1[1:2], torch.randn(4, 4, dtype=torch.float64, generator=generator)]
    )
    cls, kwargs = _rectified_square(name, bias_variance=0.0)
    _assert_fused_square_matches_generic(monkeypatch, cls, kwargs, x1, x2)


def test_fused_matches_generic_with_broadcast_batches(monkeypatch):
    # rows in a batch of 3, columns shared by the batch: the statistics' gradients of the
    # columns are summed over the batch they were broadcast to
    generator = torch.Generator().manual_seed(5)
    x1 = torch.randn(3, 5, 4, dtype=torch.float64, generator=generator)
    x2 = torch.randn(1, 7, 4, dtype=torch.float64, generator=generator)
    _assert_fused_matches_generic(monkeypatch, gp_ntk.NTKKernel, {"ard_num_dims": 4}, x1, x2)


@pytest.mark.parametrize("activation", ["relu", ArcCos(2)])
def test_fused_second_derivatives_match_generic(monkeypatch, activation):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, dtype=torch.float64, generator=generator)
    # ReLU against the same points; the rectified square against others (a point on both sides
    # takes its generic recursion)
    y = x if activation == "relu" else torch.randn(4, 3, dtype=torch.float64, generator=generator)
    kernel = gp_ntk.NTKKernel(2, activation, weight_variance=1.7, bias_variance=0.2).double()

    def hessian_row():
        leaf = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(kernel(leaf, y).to_dense().sum(), leaf, create_graph=True)
        return torch.autograd.grad(grad[0, 0], (leaf, kernel.raw_weight_variance))

    fused = hessian_row()
    with monkeypatch.context() as patch:
        _generic(patch)
        generic = hessian_row()
    for got, expected in zip(fused, generic):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_rectified_square_takes_the_fused_recursion_only_without_identical_pairs(monkeypatch):
    calls = _fused_calls(monkeypatch)
    generator = torch.Generator().manual_seed(6)
    x1 = torch.randn(6, 3, dtype=torch.float64, generator=generator)
    x2 = torch.randn(4, 3, dtype=torch.float64, generator=generator)
    kernel = gp_ntk.NTKKernel(3, ArcCos(2), bias_variance=0.3).double()
    kernel(x1, x2).to_dense()
    kernel(x1).to_dense()  # k(X, X) of distinct points: its diagonal needs no overwriting
    assert calls == [2, 2]
    # a point on both sides, or twice in X: the generic recursion evaluates its identical pairs
    kernel(x1, torch.cat([x2, x1[:1]])).to_dense()
    kernel(torch.cat([x1, x1[:1]])).to_dense()
    assert calls == [2, 2]
    gp_ntk.NTKKernel(3, ArcCos(3), bias_variance=0.3).double()(x1, x2).to_dense()
    assert calls == [2, 2]


@pytest.mark.parametrize("name", ["ntk", "nngp", "standard"])
def test_rectified_square_fused_symmetric_block(monkeypatch, name):
    # k(X, X) of distinct points: the generic matrix and gradients, an exactly symmetric matrix,
    # and a diagonal that is the points' own variances (diag=True) to rounding
    generator = torch.Generator().manual_seed(10)
    x = torch.randn(9, 4, dtype=torch.float64, generator=generator)
    cls, kwargs = _rectified_square(name, bias_variance=0.4, weight_variance=1.3)
    _assert_fused_square_matches_generic(monkeypatch, cls, kwargs, x, None)
    kwargs = dict(kwargs)
    kernel = cls(3, kwargs.pop("activation"), **kwargs).double()
    matrix = kernel(x).to_dense()
    assert torch.equal(matrix, matrix.mT)  # bitwise: exact symmetry is the property
    torch.testing.assert_close(matrix.diagonal(), kernel(x, x, diag=True), rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("activation", ["leaky_relu", ArcCos(2)])
def test_fused_backward_passes_gradcheck(activation):
    x = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    kernel = gp_ntk.NTKKernel(2, activation, weight_variance=1.7, bias_variance=0.2).double()

    def both(a, b):
        nngp, ntk = kernel.nngp_and_ntk(a, b)
        return nngp, ntk

    assert torch.autograd.gradcheck(both, (x.requires_grad_(True), y.requires_grad_(True)))


def test_one_thread_restores_the_thread_count_even_on_errors():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with relu_family.one_thread(100):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="inside"):
            with relu_family.one_thread(100):
                raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
        with relu_family.one_thread(relu_family.ONE_THREAD_BELOW):
            assert torch.get_num_threads() == 2  # large blocks keep their threads
    finally:
        torch.set_num_threads(before)


def test_kernel_evaluation_restores_the_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(20, 3, dtype=torch.float64, requires_grad=True)
        kernel = gp_ntk.NTKKernel(2).double()
        kernel(x).to_dense().sum().backward()
        assert torch.get_num_threads() == 2
        bad = torch.full((4, 3), float("nan"), dtype=torch.float64)
        with pytest.raises(ValueError):
            kernel(bad).to_dense()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("wanted", ["rows", "columns", "hyperparameters"])
def test_fused_backward_computes_only_what_the_engine_will_use(monkeypatch, wanted):
    # autograd.grad(value, X) wants neither the variances nor, in a cross block, the other side:
    # the gradients it does want are the generic recursion's, and the skipped side is not computed
    generator = torch.Generator().manual_seed(4)
    leaf1 = torch.randn(6, 5, dtype=torch.float64, generator=generator).requires_grad_(True)
    leaf2 = torch.randn(9, 5, dtype=torch.float64, generator=generator).requires_grad_(True)
    kernel = gp_ntk.NTKKernel(3, "relu", weight_variance=2.0, ard_num_dims=5).double()
    targets = {"rows": [leaf1], "columns": [leaf2], "hyperparameters": list(kernel.parameters())}[wanted]
    seen = []
    original = relu_family.block_backward

    def recording(spec, layers, cov0, stats1, stats2, theta, values, needs, *grads):
        seen.append(tuple(needs[1:3]))
        return original(spec, layers, cov0, stats1, stats2, theta, values, needs, *grads)

    def gradients():
        # (non-leaf inputs, as an input transform makes them)
        matrix = kernel(leaf1 * 1.5, leaf2 * 0.5).to_dense()
        weights = torch.randn(matrix.shape, dtype=matrix.dtype, generator=torch.Generator().manual_seed(3))
        return torch.autograd.grad((weights * matrix).sum(), targets)

    with monkeypatch.context() as patch:
        patch.setattr(relu_family, "block_backward", recording)
        fused = gradients()
    with monkeypatch.context() as patch:
        _generic(patch)
        generic = gradients()
    for got, expected in zip(fused, generic):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-12)
    assert seen == [
        {"rows": (True, False), "columns": (False, True), "hyperparameters": (True, True)}[wanted]
    ]
