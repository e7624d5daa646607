"""The fused unit-variance block (gp_ntk.kernels._unit_block) against the generic evaluation."""

from __future__ import annotations

import pytest
import torch

import gp_ntk
from gp_ntk.activations import ArcCos, LeakyReLU
from gp_ntk.kernels import UnitVarianceKernel
from gp_ntk.kernels._unit_block import unit_variance_block, unit_variance_block_reference
from gp_ntk.kernels.base import VarianceKernel
from gp_ntk.recursion import (
    first_layer_variances,
    fused_block_coefficients,
    layer_recursion,
    point_statistics,
)

D = 4


#: the activations whose unit-variance block is fused, by test id
ACTIVATIONS = {
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "abs": "abs",
    "arccos1": ArcCos(1),
    "arccos2": ArcCos(2),
}


def _kernel(name: str, activation: str, batch_shape: tuple = ()) -> VarianceKernel:
    activation = ACTIVATIONS.get(activation, activation)
    cls = gp_ntk.NTKKernel if name == "ntk" else gp_ntk.NNGPKernel
    kernel = cls(depth=3, activation=activation, ard_num_dims=D, batch_shape=torch.Size(batch_shape)).double()
    generator = torch.Generator().manual_seed(3)
    shape = kernel.raw_input_weight_variance.shape
    with torch.no_grad():
        kernel.raw_input_weight_variance.copy_(torch.randn(shape, generator=generator, dtype=torch.float64))
        kernel.raw_bias_variance.add_(-0.7)
        kernel.raw_weight_variance.add_(0.4)
    return kernel


def _generic(monkeypatch, uv: UnitVarianceKernel, x1, x2):
    """UnitVarianceKernel's matrix with the fused path switched off."""
    with monkeypatch.context() as patch:
        patch.setattr(VarianceKernel, "unit_variance_matrix", lambda self, a, b: None)
        return uv.forward(x1, x2)


def _parameters(kernel):
    return [kernel.raw_input_weight_variance, kernel.raw_bias_variance, kernel.raw_weight_variance]


@pytest.mark.parametrize("name", ["ntk", "nngp"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize(
    "rows, cols, kernel_batch",
    [((5,), (7,), ()), ((3, 5), (7,), ()), ((3, 5), (3, 7), ()), ((5,), (7,), (2,))],
    ids=["plain", "rows-batched", "both-batched", "kernel-batched"],
)
def test_fused_block_is_the_generic_matrix_with_its_gradients(
    monkeypatch, name, activation, symmetric, rows, cols, kernel_batch
) -> None:
    kernel = _kernel(name, activation, torch.Size(kernel_batch))
    uv = UnitVarianceKernel(kernel)
    generator = torch.Generator().manual_seed(0)
    x1 = (torch.rand(*rows, D, generator=generator, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    x2 = x1 if symmetric else (torch.rand(*cols, D, generator=generator, dtype=torch.float64) * 2 - 1)
    x2.requires_grad_(True)
    fused = kernel.unit_variance_matrix(x1, x2)
    assert fused is not None
    generic = _generic(monkeypatch, uv, x1, x2)
    torch.testing.assert_close(fused, generic, rtol=1e-13, atol=1e-14)
    weights = torch.randn(generic.shape, generator=generator, dtype=torch.float64)
    inputs = [x1] + ([] if symmetric else [x2]) + _parameters(kernel)
    found = torch.autograd.grad(fused, inputs, weights)
    expected = torch.autograd.grad(generic, inputs, weights)
    for got, want in zip(found, expected):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12)
    if symmetric:
        # bitwise: exact symmetry and an exactly unit diagonal are the properties
        assert torch.equal(fused, fused.mT)
        assert torch.equal(
            fused.diagonal(dim1=-2, dim2=-1), torch.ones_like(fused.diagonal(dim1=-2, dim2=-1))
        )


def test_unit_variance_kernel_takes_the_fused_path(monkeypatch) -> None:
    kernel = _kernel("ntk", "relu")
    calls = []
    original = VarianceKernel.unit_variance_matrix

    def counted(self, x1, x2):
        result = original(self, x1, x2)
        calls.append(result is not None)
        return result

    monkeypatch.setattr(VarianceKernel, "unit_variance_matrix", counted)
    x = torch.rand(6, D, dtype=torch.float64) - 0.5
    UnitVarianceKernel(kernel)(x, x[:3]).to_dense()
    assert calls == [True]


@pytest.mark.parametrize("shared", [True, False], ids=["shared-layers", "per-layer"])
@pytest.mark.parametrize("activation", [LeakyReLU(0.2), ArcCos(2)], ids=["leaky_relu", "arccos2"])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("name", ["ntk", "nngp"])
def test_fused_block_gradcheck_and_second_derivatives(name, symmetric, activation, shared) -> None:
    # the statistics and diagonals are recomputed from the perturbed inputs, so that the finite
    # differences see every dependence the hand-written backward pass accounts for
    compute_ntk = name == "ntk"
    num_layers = 3
    generator = torch.Generator().manual_seed(1)
    x1 = torch.rand(3, D, generator=generator, dtype=torch.float64) * 2 - 1
    x2 = torch.rand(4, D, generator=generator, dtype=torch.float64) * 2 - 1
    weight = torch.rand(1, D, generator=generator, dtype=torch.float64) + 0.5
    bias = torch.full((1, 1), 0.3, dtype=torch.float64)
    layer_weight = torch.full((1, 1), 1.7, dtype=torch.float64)
    layer_bias = torch.full((1, 1), 0.2, dtype=torch.float64)

    def layers(lw, lb):
        # one tensor for every layer, or a variance per layer (the side's per-layer branch)
        if shared:
            return [lw] * num_layers, [lb] * num_layers
        return [lw * (1.0 + 0.3 * k) for k in range(num_layers)], [
            lb * (1.0 - 0.2 * k) for k in range(num_layers)
        ]

    def block(a, b, w, c, lw, lb):
        b = a if symmetric else b
        ws, bs = layers(lw, lb)
        vector_ws, vector_bs = [v.squeeze(-1) for v in ws], [v.squeeze(-1) for v in bs]
        with torch.no_grad():
            stats, diagonals = [], []
            for x in (a,) if symmetric else (a, b):
                var = first_layer_variances(x, w, c)
                stats.append(point_statistics(var, activation, vector_ws, vector_bs))
                nngp, ntk = layer_recursion(
                    var, var, var, activation, vector_ws, vector_bs, compute_ntk, diag=True
                )
                diagonals.append(ntk if compute_ntk else nngp)
        return unit_variance_block(
            activation,
            fused_block_coefficients(activation),
            a,
            b,
            w,
            c,
            ws,
            bs,
            stats[0],
            stats[-1],
            None if symmetric else diagonals[0],
            None if symmetric else diagonals[-1],
            compute_ntk,
        )

    inputs = [t.clone().requires_grad_(True) for t in (x1, x2, weight, bias, layer_weight, layer_bias)]
    torch.autograd.gradcheck(block, inputs)
    torch.autograd.gradgradcheck(block, inputs)
    # the reference evaluation is the same matrix
    with torch.no_grad():
        reference = unit_variance_block_reference(
            activation,
            x1,
            x1 if symmetric else x2,
            weight,
            bias,
            *layers(layer_weight, layer_bias),
            compute_ntk,
            symmetric,
        )
        torch.testing.assert_close(block(x1, x2, weight, bias, layer_weight, layer_bias), reference)


def test_fused_path_declines_where_the_generic_path_is_needed() -> None:
    x1, x2 = torch.rand(3, D, dtype=torch.float64) - 0.5, torch.rand(5, D, dtype=torch.float64) - 0.5
    assert gp_ntk.NTKKernel(depth=2, activation="erf").double().unit_variance_matrix(x1, x2) is None
    assert gp_ntk.NTKKernel(depth=2, bias_variance=0.0).double().unit_variance_matrix(x1, x2) is None
    assert gp_ntk.NTKKernel(depth=2, active_dims=[0, 1]).double().unit_variance_matrix(x1, x2) is None
    standard = gp_ntk.NTKKernel(depth=2, parameterization="standard", width=16).double()
    assert standard.unit_variance_matrix(x1, x2) is None
    with gp_ntk.settings.lazy_evaluation("always"):
        assert gp_ntk.NTKKernel(depth=2).double().unit_variance_matrix(x1, x2) is None
    assert gp_ntk.NTKKernel(depth=2).double().unit_variance_matrix(x1, x2) is not None
    cubic = gp_ntk.NTKKernel(depth=2, activation=ArcCos(3)).double()
    assert cubic.unit_variance_matrix(x1, x2) is None


@pytest.mark.parametrize("name", ["ntk", "nngp"])
@pytest.mark.parametrize("layout", ["cross", "symmetric", "prediction"])
def test_rectified_square_block_with_a_point_twice_is_the_generic_matrix(monkeypatch, name, layout) -> None:
    # a point on both sides (or twice in k(X, X)): correlation exactly 1 there, a constant, as
    # the generic path's identical pairs give it; elsewhere the generic matrix and gradients
    kernel = _kernel(name, "arccos2")
    uv = UnitVarianceKernel(kernel)
    generator = torch.Generator().manual_seed(8)
    x1 = torch.rand(5, D, generator=generator, dtype=torch.float64) * 2 - 1
    x2 = torch.rand(4, D, generator=generator, dtype=torch.float64) * 2 - 1
    if layout == "cross":
        x2 = torch.cat([x2, x1[1:2]])
        pairs = [(1, 4)]
    elif layout == "symmetric":
        x1 = torch.cat([x1, x1[2:3]])
        pairs = [(2, 5), (5, 2)]
    else:  # a BO prediction's one block: the candidates against the training points and themselves
        x1, x2 = x1[:, None, :], torch.cat([x2.expand(5, -1, -1), x1[:, None, :]], dim=-2)
        pairs = [(i, 0, 4) for i in range(5)]
    x1.requires_grad_(True)
    x2 = x1 if layout == "symmetric" else x2.requires_grad_(True)
    fused = kernel.unit_variance_matrix(x1, x2)
    assert fused is not None
    generic = _generic(monkeypatch, uv, x1, x2)
    for index in pairs:
        assert fused[index] == 1.0  # bitwise: a unit correlation is the property
    torch.testing.assert_close(fused, generic, rtol=1e-13, atol=1e-14)
    weights = torch.randn(generic.shape, generator=generator, dtype=torch.float64)
    inputs = [x1] + ([] if layout == "symmetric" else [x2]) + _parameters(kernel)
    for got, want in zip(
        torch.autograd.grad(fused, inputs, weights), torch.autograd.grad(generic, inputs, weights)
    ):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12)


def test_remembered_statistics_follow_the_inputs_and_hyperparameters(monkeypatch) -> None:
    kernel = _kernel("ntk", "relu")
    uv = UnitVarianceKernel(kernel)
    x1, x2 = torch.rand(3, D, dtype=torch.float64) - 0.5, torch.rand(6, D, dtype=torch.float64) - 0.5
    first = kernel.unit_variance_matrix(x1, x2)
    torch.testing.assert_close(kernel.unit_variance_matrix(x1.clone(), x2.clone()), first, rtol=0, atol=0)
    with torch.no_grad():
        kernel.raw_bias_variance.add_(0.5)  # in place: a changed value under the same tensor
    changed = kernel.unit_variance_matrix(x1, x2)
    torch.testing.assert_close(changed, _generic(monkeypatch, uv, x1, x2), rtol=1e-13, atol=1e-14)
    assert not torch.allclose(changed, first)
    x2.mul_(0.5)
    torch.testing.assert_close(
        kernel.unit_variance_matrix(x1, x2), _generic(monkeypatch, uv, x1, x2), rtol=1e-13, atol=1e-14
    )
    # a float32 copy of the kernel does not take the float64 statistics
    single = kernel.float()
    torch.testing.assert_close(
        single.unit_variance_matrix(x1.float(), x2.float()),
        _generic(monkeypatch, UnitVarianceKernel(single), x1.float(), x2.float()),
    )


def test_fused_block_without_gradient_is_the_same_matrix(monkeypatch) -> None:
    kernel = _kernel("ntk", "relu")
    x1, x2 = torch.rand(2, 3, D, dtype=torch.float64) - 0.5, torch.rand(6, D, dtype=torch.float64) - 0.5
    with torch.no_grad():
        fused = kernel.unit_variance_matrix(x1, x2)
        assert not fused.requires_grad
        torch.testing.assert_close(
            fused, _generic(monkeypatch, UnitVarianceKernel(kernel), x1, x2), rtol=1e-13, atol=1e-14
        )


def test_remembered_statistics_are_reused_only_where_they_were_checked(monkeypatch) -> None:
    kernel = _kernel("ntk", "relu")
    computed = []
    original = VarianceKernel._side

    def counted(self, x, variances, check=True):
        computed.append(x.shape[-2])
        return original(self, x, variances, check)

    monkeypatch.setattr(VarianceKernel, "_side", counted)
    x1, x2 = torch.rand(3, D, dtype=torch.float64) - 0.5, torch.rand(6, D, dtype=torch.float64) - 0.5
    with gp_ntk.settings.check_finite(False):
        kernel.unit_variance_matrix(x1, x2)
        kernel.unit_variance_matrix(x1, x2)
    assert computed == [3, 6]
    kernel.unit_variance_matrix(x1, x2)  # the checks are on again: computed (and checked) anew
    kernel.unit_variance_matrix(x1, x2)
    with gp_ntk.settings.check_finite(False):
        kernel.unit_variance_matrix(x1, x2)  # checked statistics serve unchecked calls too
    assert computed == [3, 6, 3, 6]


@pytest.mark.parametrize(
    "symmetric, wanted",
    [(False, w) for w in ("x1", "x2", "hyperparameters", "x1-and-one-variance")]
    + [(True, w) for w in ("x1", "hyperparameters", "x1-and-one-variance")],
)
def test_backward_computes_only_what_the_engine_will_use(monkeypatch, symmetric, wanted) -> None:
    # torch.autograd.grad(value, X), as acquisition optimisation asks, wants no hyperparameter's
    # gradient: the pass skips their reductions and, for a cross block, the other side's chain
    import gp_ntk.kernels._unit_block as unit_block

    kernel = _kernel("ntk", "relu")
    uv = UnitVarianceKernel(kernel)
    generator = torch.Generator().manual_seed(5)
    leaf1 = torch.rand(5, D, generator=generator, dtype=torch.float64).requires_grad_(True)
    leaf2 = torch.rand(7, D, generator=generator, dtype=torch.float64).requires_grad_(True)
    # (non-leaf inputs, as an input transform makes them: the engine can say whether it needs them)
    x1 = leaf1 * 2 - 1
    x2 = x1 if symmetric else leaf2 * 2 - 1
    targets = {
        "x1": [leaf1],
        "x2": [leaf2],
        "hyperparameters": _parameters(kernel),
        "x1-and-one-variance": [leaf1, kernel.raw_bias_variance],
    }[wanted]
    calls = []
    original = unit_block._side_backward

    def counting(*args, **kwargs):
        calls.append(kwargs["wants_values"])
        return original(*args, **kwargs)

    monkeypatch.setattr(unit_block, "_side_backward", counting)
    fused = kernel.unit_variance_matrix(x1, x2)
    weights = torch.randn(fused.shape, generator=generator, dtype=torch.float64)
    found = torch.autograd.grad(fused, targets, weights, retain_graph=True)
    generic = _generic(monkeypatch, uv, x1, x2)
    expected = torch.autograd.grad(generic, targets, weights)
    for got, want in zip(found, expected):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12)
    wants_values = wanted in ("hyperparameters", "x1-and-one-variance")
    sides = 1 if symmetric or wanted in ("x1", "x2") else 2
    assert calls == [wants_values] * sides
