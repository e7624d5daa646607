"""The kernels' contract with their users: saved state, conversions, arguments and refusals."""

from __future__ import annotations

import copy
import io
import math
import pickle
import warnings

import gpytorch
import numpy as np
import pytest
import torch
from botorch.utils.context_managers import module_rollback_ctx
from gpytorch.priors import GammaPrior, LogNormalPrior

import gp_ntk
from gp_ntk.bo import make_bo_model


def _parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.named_parameters()}


def _assert_unchanged(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = _parameters(module)
    assert after.keys() == before.keys()
    for name, value in after.items():
        # bitwise identity is the property: a refused call must not touch anything
        assert torch.equal(value, before[name]), name


def _perturbed(kernel: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for i, parameter in enumerate(kernel.parameters()):
            parameter.add_(0.3 + 0.1 * i)
    return kernel


# --------------------------------------------------------------------------- structure in state_dict


STRUCTURE_MISMATCHES = {
    "depth": (lambda: gp_ntk.NNGPKernel(depth=2), lambda: gp_ntk.NNGPKernel(depth=5)),
    "activation": (lambda: gp_ntk.NNGPKernel(depth=2), lambda: gp_ntk.NNGPKernel(depth=2, activation="erf")),
    "activation (parameter)": (
        lambda: gp_ntk.NTKKernel(depth=2, activation=gp_ntk.LeakyReLU(0.1)),
        lambda: gp_ntk.NTKKernel(depth=2, activation=gp_ntk.LeakyReLU(0.2)),
    ),
    "kernel": (lambda: gp_ntk.NNGPKernel(depth=2), lambda: gp_ntk.NTKKernel(depth=2)),
    "parameterization": (
        lambda: gp_ntk.NTKKernel(depth=2),
        lambda: gp_ntk.NTKKernel(depth=2, parameterization="standard", width=64),
    ),
    "per_layer": (
        lambda: gp_ntk.NNGPKernel(depth=2, per_layer=True),
        lambda: gp_ntk.NNGPKernel(depth=2),
    ),
    "order": (lambda: gp_ntk.ArcCosineKernel(order=1), lambda: gp_ntk.ArcCosineKernel(order=2)),
    "num_layers": (
        lambda: gp_ntk.ArcCosineKernel(num_layers=1),
        lambda: gp_ntk.ArcCosineKernel(num_layers=3),
    ),
}


@pytest.mark.parametrize("field", sorted(STRUCTURE_MISMATCHES))
def test_state_dict_of_another_structure_is_refused_naming_the_difference(field):
    build_saved, build_target = STRUCTURE_MISMATCHES[field]
    saved = _perturbed(build_saved()).state_dict()
    target = build_target()
    before = _parameters(target)
    with pytest.raises(RuntimeError, match=rf"nothing was loaded: .*\b{field.split()[0]}: "):
        target.load_state_dict(saved)
    _assert_unchanged(target, before)


def test_structure_is_checked_inside_a_model():
    saved = gpytorch.kernels.ScaleKernel(gp_ntk.NNGPKernel(depth=2)).state_dict()
    target = gpytorch.kernels.ScaleKernel(gp_ntk.NNGPKernel(depth=5))
    before = _parameters(target.base_kernel)
    with pytest.raises(RuntimeError, match="depth: 2 in the state_dict, 5 here"):
        target.load_state_dict(saved)
    _assert_unchanged(target.base_kernel, before)


def test_partial_non_strict_load_inside_a_model_still_works():
    source = gpytorch.kernels.ScaleKernel(gp_ntk.NNGPKernel(depth=5))
    source.outputscale = 2.5
    target = gpytorch.kernels.ScaleKernel(gp_ntk.NNGPKernel(depth=2))
    before = _parameters(target.base_kernel)
    # only the outputscale: the kernel's own entries are missing, which strict=False allows
    result = target.load_state_dict({"raw_outputscale": source.raw_outputscale.detach()}, strict=False)
    assert any(key.startswith("base_kernel.") for key in result.missing_keys)
    torch.testing.assert_close(target.outputscale, source.outputscale)
    _assert_unchanged(target.base_kernel, before)
    # across structures inside a model: refused, saying how to load it anyway
    with pytest.raises(RuntimeError, match="remove the 'base_kernel._extra_state' entry"):
        target.load_state_dict(source.state_dict(), strict=False)
    state = {k: v for k, v in source.state_dict().items() if k != "base_kernel._extra_state"}
    target.load_state_dict(state)
    torch.testing.assert_close(target.base_kernel.weight_variance, source.base_kernel.weight_variance)


def test_same_structure_round_trips_through_weights_only_torch_load():
    x = torch.randn(6, 3)
    kernel = _perturbed(gp_ntk.NTKKernel(depth=3, activation="gelu", per_layer=True, ard_num_dims=3))
    buffer = io.BytesIO()
    torch.save(kernel.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = gp_ntk.NTKKernel(depth=3, activation="gelu", per_layer=True, ard_num_dims=3)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(x).to_dense(), kernel(x).to_dense(), rtol=0, atol=0)


def test_state_dict_without_structure_entry_still_loads():
    # state dicts saved before the structure was stored: loaded (strictly by keys), unchecked
    x = torch.randn(6, 3)
    kernel = _perturbed(gp_ntk.NNGPKernel(depth=3))
    old = {key: value for key, value in kernel.state_dict().items() if not key.endswith("_extra_state")}
    assert len(old) == len(kernel.state_dict()) - 1
    fresh = gp_ntk.NNGPKernel(depth=3)
    result = fresh.load_state_dict(old)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(fresh(x).to_dense(), kernel(x).to_dense(), rtol=0, atol=0)


def test_non_strict_load_of_another_structure_warns_and_loads():
    saved = _perturbed(gp_ntk.NNGPKernel(depth=2, weight_variance=3.0))
    target = gp_ntk.NNGPKernel(depth=5)
    with pytest.warns(RuntimeWarning, match="depth: 2 in the state_dict, 5 here"):
        target.load_state_dict(saved.state_dict(), strict=False)
    torch.testing.assert_close(target.weight_variance, saved.weight_variance, rtol=0, atol=0)


def test_rollback_and_clone_loops_see_only_tensors():
    # BoTorch's rollback and gp_ntk's own snapshots call .detach().clone() on every entry
    kernel = gp_ntk.NNGPKernel(depth=2, weight_variance=2.0)
    assert all(isinstance(value, torch.Tensor) for value in kernel.state_dict().values())
    with module_rollback_ctx(kernel):
        kernel.weight_variance = 5.0
    torch.testing.assert_close(kernel.weight_variance, torch.tensor([2.0]))


# --------------------------------------------------------------------------- refused loads change nothing


KEY_MISMATCHES = {
    "bias into none": (
        lambda: gp_ntk.NNGPKernel(depth=2),
        lambda: gp_ntk.NNGPKernel(depth=2, bias_variance=0.0),
    ),
    "none into bias": (
        lambda: gp_ntk.NNGPKernel(depth=2, bias_variance=0.0),
        lambda: gp_ntk.NNGPKernel(depth=2),
    ),
    "ard into plain": (lambda: gp_ntk.NTKKernel(depth=2, ard_num_dims=3), lambda: gp_ntk.NTKKernel(depth=2)),
    "plain into ard": (lambda: gp_ntk.NTKKernel(depth=2), lambda: gp_ntk.NTKKernel(depth=2, ard_num_dims=3)),
    "erf ard into plain": (lambda: gp_ntk.ErfKernel(ard_num_dims=2), lambda: gp_ntk.ErfKernel()),
    "batch shape": (
        lambda: gp_ntk.NNGPKernel(depth=2, batch_shape=torch.Size([2])),
        lambda: gp_ntk.NNGPKernel(depth=2),
    ),
}


@pytest.mark.parametrize("case", sorted(KEY_MISMATCHES))
@pytest.mark.parametrize("with_structure", [True, False])
def test_refused_load_changes_nothing(case, with_structure):
    build_saved, build_target = KEY_MISMATCHES[case]
    saved = _perturbed(build_saved()).state_dict()
    if not with_structure:
        saved = {key: value for key, value in saved.items() if not key.endswith("_extra_state")}
    target = build_target()
    before = _parameters(target)
    with pytest.raises(RuntimeError, match="nothing was loaded"):
        target.load_state_dict(saved)
    _assert_unchanged(target, before)


# --------------------------------------------------------------------------- pickling with priors


def _gamma() -> GammaPrior:
    return GammaPrior(2.0, 1.5)


KERNELS_WITH_PRIORS = {
    "nngp": lambda: gp_ntk.NNGPKernel(
        depth=3, weight_variance_prior=_gamma(), bias_variance_prior=LogNormalPrior(-2.0, 1.0)
    ),
    "nngp-ard-per-layer": lambda: gp_ntk.NNGPKernel(
        depth=2, activation="erf", ard_num_dims=3, per_layer=True, weight_variance_prior=_gamma()
    ),
    "ntk": lambda: gp_ntk.NTKKernel(depth=2, weight_variance_prior=_gamma(), bias_variance_prior=_gamma()),
    "ntk-ard": lambda: gp_ntk.NTKKernel(depth=2, ard_num_dims=3, weight_variance_prior=_gamma()),
    "arccos-ard": lambda: gp_ntk.ArcCosineKernel(
        order=2, num_layers=2, ard_num_dims=3, weight_variance_prior=_gamma(), bias_variance_prior=_gamma()
    ),
    "erf": lambda: gp_ntk.ErfKernel(weight_variance_prior=_gamma(), bias_variance_prior=_gamma()),
}


def _log_prior(module: torch.nn.Module) -> torch.Tensor:
    return sum(prior.log_prob(closure(owner)).sum() for _, owner, prior, closure, _ in module.named_priors())


def _round_trips(module):
    yield pickle.loads(pickle.dumps(module))
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    yield torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("name", sorted(KERNELS_WITH_PRIORS))
def test_kernels_with_priors_pickle_and_torch_save(name):
    x = torch.randn(7, 3)
    kernel = _perturbed(KERNELS_WITH_PRIORS[name]())
    expected = kernel(x).to_dense()
    for clone in _round_trips(kernel):
        torch.testing.assert_close(clone(x).to_dense(), expected, rtol=0, atol=0)
        torch.testing.assert_close(_log_prior(clone), _log_prior(kernel), rtol=0, atol=0)
        # the setting closures survive too: sampling from a prior writes through the setter
        for prior_name, *_ in clone.named_priors():
            clone.sample_from_prior(prior_name)
        assert torch.isfinite(clone(x).to_dense()).all()


def test_exact_gp_model_with_priors_pickles():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = torch.sin(x[:, 0]) + 0.1 * torch.randn(12, generator=g, dtype=torch.float64)
    kernel = gp_ntk.NTKKernel(
        depth=2, ard_num_dims=3, weight_variance_prior=_gamma(), bias_variance_prior=_gamma()
    )
    model = gp_ntk.models.ExactGPModel(x, y, kernel=kernel).double()
    expected = model.covar_module(x).to_dense()
    for clone in _round_trips(model):
        torch.testing.assert_close(clone.covar_module(x).to_dense(), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["nngp", "ntk", "arccos", "erf"])
@pytest.mark.parametrize("ard", [False, True])
def test_bo_models_pickle(name, ard):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(10, 3, generator=g, dtype=torch.float64)
    y = (x**2).sum(-1, keepdim=True)
    bounds = torch.stack([torch.zeros(3), torch.ones(3)]).to(x)
    model = make_bo_model(x, y, bounds, kernel=name, ard=ard)
    assert len(list(model.named_priors())) > 0
    expected = model.covar_module(x).to_dense()
    for clone in _round_trips(model):
        torch.testing.assert_close(clone.covar_module(x).to_dense(), expected, rtol=0, atol=0)


# --------------------------------------------------------------------------- exact values across .double()


def _relu_ntk_one_layer(x: torch.Tensor, y: torch.Tensor, w: float) -> torch.Tensor:
    r"""Bias-free one-hidden-layer ReLU NTK: :math:`\frac{w^2\|x\|\|y\|}{2\pi d}(\sin\theta + 2(\pi-\theta)\cos\theta)`."""
    norms = x.norm(dim=-1)[:, None] * y.norm(dim=-1)[None, :]
    cos = (x @ y.T / norms).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    return w**2 * norms / (2 * math.pi * x.shape[-1]) * (torch.sin(theta) + 2 * (math.pi - theta) * cos)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_double_keeps_the_constructor_value_exactly():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 4, generator=g, dtype=torch.float64)
    y = torch.randn(5, 4, generator=g, dtype=torch.float64)
    for w in (0.3, 2.0, 1.7):
        kernel = gp_ntk.NTKKernel(depth=1, weight_variance=w, bias_variance=0.0).double()
        assert float(kernel.weight_variance) == pytest.approx(w, rel=1e-15, abs=0)
        assert _relative_error(kernel(x, y).to_dense(), _relu_ntk_one_layer(x, y, w)) < 1e-14


@pytest.mark.parametrize("convert", [lambda m: m.double(), lambda m: m.to(torch.float64)])
def test_double_matches_a_kernel_built_in_float64(convert):
    x = torch.randn(8, 3, dtype=torch.float64)
    options = dict(depth=10, weight_variance=2.0, bias_variance=0.1, ard_num_dims=3)
    converted = convert(gpytorch.kernels.ScaleKernel(gp_ntk.NTKKernel(**options))).base_kernel
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        reference = gp_ntk.NTKKernel(**options)
    finally:
        torch.set_default_dtype(default)
    assert _relative_error(converted(x).to_dense(), reference(x).to_dense()) < 1e-14


def test_double_keeps_values_set_through_the_setters_in_float32():
    kernel = gp_ntk.NNGPKernel(depth=3, ard_num_dims=3, per_layer=True)
    kernel.weight_variance = [0.7, 1.3, 2.9]
    kernel.bias_variance = 0.3
    kernel.input_weight_variance = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    assert kernel.raw_weight_variance.dtype == torch.float32
    kernel.double()
    for got, wanted in (
        (kernel.weight_variance, [0.7, 1.3, 2.9]),
        (kernel.bias_variance, [0.3] * 4),
        (kernel.input_weight_variance[0], [0.1, 0.2, 0.3]),
    ):
        torch.testing.assert_close(got, torch.tensor(wanted, dtype=torch.float64), rtol=1e-15, atol=0)
    # down and up again: the value set is still the one restored
    kernel.float().double()
    torch.testing.assert_close(
        kernel.bias_variance, torch.full((4,), 0.3, dtype=torch.float64), rtol=1e-15, atol=0
    )


def test_double_after_training_just_casts():
    kernel = gp_ntk.NNGPKernel(depth=2, weight_variance=0.3, bias_variance=0.2)
    x = torch.randn(6, 3)
    optimiser = torch.optim.SGD(kernel.parameters(), lr=0.1)
    kernel(x).to_dense().sum().backward()
    optimiser.step()
    trained = {name: value.detach().clone() for name, value in kernel.named_parameters()}
    kernel.double()
    for name, value in kernel.named_parameters():
        assert value.dtype == torch.float64
        assert torch.equal(value, trained[name].double()), name


# --------------------------------------------------------------------------- setters: shapes


def test_setter_refuses_shapes_that_do_not_broadcast_and_keeps_the_value():
    kernel = gp_ntk.NNGPKernel(depth=3, per_layer=True, weight_variance=[1.0, 2.0, 3.0, 4.0])
    before = _parameters(kernel)
    with pytest.raises(ValueError, match=r"weight_variance: a value of shape \(2, 2\) does not broadcast"):
        kernel.weight_variance = torch.ones(2, 2)
    with pytest.raises(ValueError, match=r"depth \+ 1 = 4 per-layer values"):
        kernel.weight_variance = torch.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match=r"bias_variance: a value of shape \(3,\)"):
        kernel.bias_variance = [0.1, 0.2, 0.3]
    _assert_unchanged(kernel, before)


def test_setter_accepts_numbers_exact_and_broadcasting_shapes():
    kernel = gp_ntk.NNGPKernel(depth=2, per_layer=True, ard_num_dims=2, batch_shape=torch.Size([3]))
    kernel.weight_variance = 1.5
    torch.testing.assert_close(kernel.weight_variance, torch.full((3, 2), 1.5))
    kernel.weight_variance = [1.0, 2.0]  # one value per layer, for every batch member
    torch.testing.assert_close(kernel.weight_variance, torch.tensor([[1.0, 2.0]] * 3))
    kernel.weight_variance = torch.tensor([[1.0], [2.0], [3.0]])  # one per batch member
    torch.testing.assert_close(kernel.weight_variance, torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
    full = torch.rand(3, 2) + 0.5
    kernel.weight_variance = full
    torch.testing.assert_close(kernel.weight_variance, full)
    kernel.input_weight_variance = [0.5, 0.25]
    torch.testing.assert_close(kernel.input_weight_variance, torch.tensor([[[0.5, 0.25]]] * 3))
    with pytest.raises(ValueError, match="ard_num_dims = 2 values, one per input feature"):
        kernel.input_weight_variance = [0.5, 0.25, 0.1]


# --------------------------------------------------------------------------- constructor arguments


def test_tensors_arrays_and_lists_give_the_same_per_layer_kernel():
    x = torch.randn(5, 3)
    values = [1.0, 2.0, 3.0, 4.0]
    reference = gp_ntk.NNGPKernel(depth=3, weight_variance=values, bias_variance=[0.1, 0.2, 0.3, 0.4])
    for kind in (torch.tensor, np.array, tuple):
        kernel = gp_ntk.NNGPKernel(
            depth=3, weight_variance=kind(values), bias_variance=kind([0.1, 0.2, 0.3, 0.4])
        )
        assert kernel.per_layer
        torch.testing.assert_close(kernel.weight_variance, reference.weight_variance, rtol=0, atol=0)
        torch.testing.assert_close(kernel(x).to_dense(), reference(x).to_dense(), rtol=0, atol=0)
    ard = gp_ntk.ArcCosineKernel(weight_variance=torch.tensor([0.5, 1.0]), ard_num_dims=2)
    torch.testing.assert_close(ard.input_weight_variance, torch.tensor([[0.5, 1.0]]))


@pytest.mark.parametrize(
    "build,match",
    [
        (
            lambda: gp_ntk.NNGPKernel(depth=3, weight_variance=torch.tensor([1.0, 2.0, 3.0])),
            r"weight_variance: got 3 values; pass one number or depth \+ 1 = 4 per-layer values",
        ),
        (
            lambda: gp_ntk.NNGPKernel(depth=3, ard_num_dims=2, weight_variance=[1.0, 2.0, 3.0, 4.0]),
            r"depth = 3 per-layer values \(layers 2 to depth \+ 1: with ard_num_dims",
        ),
        (
            lambda: gp_ntk.NTKKernel(depth=2, bias_variance=np.array([0.1, 0.2])),
            r"bias_variance: got 2 values; pass one number or depth \+ 1 = 3",
        ),
        (
            lambda: gp_ntk.ArcCosineKernel(weight_variance=[1, 2]),
            "ArcCosineKernel has a single weight variance, got 2 values; pass ard_num_dims=2",
        ),
        (
            lambda: gp_ntk.ErfKernel(weight_variance=torch.tensor([1.0, 2.0]), ard_num_dims=3),
            r"ard_num_dims = 3 values \(one per input feature\)",
        ),
        (lambda: gp_ntk.ErfKernel(bias_variance=[0.1, 0.2]), "ErfKernel has a single bias variance"),
        (lambda: gp_ntk.NNGPKernel(weight_variance=torch.ones(2, 2)), "1-D sequence of numbers"),
    ],
)
def test_wrong_counts_say_what_is_accepted(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("integer", [np.int64, np.int32, np.uint8, int])
def test_integral_numbers_are_accepted_everywhere(integer):
    x = torch.randn(4, 3)
    kernel = gp_ntk.NTKKernel(depth=integer(3), ard_num_dims=integer(3))
    assert type(kernel.depth) is int and type(kernel.ard_num_dims) is int
    torch.testing.assert_close(kernel(x).to_dense(), gp_ntk.NTKKernel(depth=3, ard_num_dims=3)(x).to_dense())
    standard = gp_ntk.NTKKernel(depth=integer(2), parameterization="standard", width=integer(16))
    assert type(standard.width) is int
    arccos = gp_ntk.ArcCosineKernel(order=integer(2), num_layers=integer(2), ard_num_dims=integer(3))
    assert type(arccos.num_layers) is int and type(arccos.order) is int
    assert gp_ntk.ErfKernel(ard_num_dims=integer(3))(x).to_dense().shape == (4, 4)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: gp_ntk.NNGPKernel(depth=True), "depth must be an integer >= 1"),
        (lambda: gp_ntk.NNGPKernel(depth=np.float64(3.0)), "depth must be an integer >= 1"),
        (lambda: gp_ntk.NTKKernel(ard_num_dims=np.bool_(True)), "ard_num_dims must be a positive integer"),
        (lambda: gp_ntk.ArcCosineKernel(num_layers=np.int64(0)), "num_layers must be an integer >= 1"),
        (lambda: gp_ntk.NTKKernel(parameterization="standard", width=2.5), "width"),
        (lambda: gp_ntk.NNGPKernel(active_dims=[0, -1]), "active_dims must be a sequence of non-negative"),
    ],
)
def test_non_integers_are_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()


# --------------------------------------------------------------------------- input shapes


def test_diag_with_different_row_counts_is_refused():
    kernel = gp_ntk.NTKKernel(depth=2)
    x1, x2 = torch.randn(8, 3), torch.randn(5, 3)
    match = "diag=True pairs the rows of x1 and x2, so they need the same number of rows, got x1: 8 and x2: 5"
    with pytest.raises(ValueError, match=match):
        kernel(x1, x2, diag=True)
    with pytest.raises(ValueError, match=match):
        gpytorch.kernels.ScaleKernel(kernel)(x1, x2, diag=True)
    with pytest.raises(ValueError, match=match):
        kernel.nngp_and_ntk(x1, x2, diag=True)


def test_batch_shapes_that_do_not_broadcast_are_refused():
    kernel = gp_ntk.NNGPKernel(depth=2)
    with pytest.raises(ValueError, match=r"batch shapes of x1 \(2,\) and x2 \(3,\) do not broadcast"):
        kernel(torch.randn(2, 8, 3), torch.randn(3, 5, 3)).to_dense()
    batched = gp_ntk.NNGPKernel(depth=2, batch_shape=torch.Size([2]))
    match = r"inputs' batch shape \(3,\) does not broadcast with the kernel's batch_shape \(2,\)"
    with pytest.raises(ValueError, match=match):
        batched(torch.randn(3, 8, 3)).to_dense()
    with pytest.raises(ValueError, match=match):
        gpytorch.kernels.ScaleKernel(batched, batch_shape=torch.Size([2]))(torch.randn(3, 8, 3)).to_dense()
    # shapes that broadcast still work
    assert batched(torch.randn(8, 3)).to_dense().shape == (2, 8, 8)
    assert batched(torch.randn(4, 1, 8, 3), torch.randn(2, 5, 3)).to_dense().shape == (4, 2, 8, 5)


def test_active_dims_out_of_range_are_refused():
    kernel = gp_ntk.NNGPKernel(depth=2, active_dims=[0, 5])
    with pytest.raises(
        ValueError, match=r"active_dims \[0, 5\] selects feature\(s\) \[5\], but the inputs have 3"
    ):
        kernel(torch.randn(8, 3)).to_dense()
    x = torch.randn(8, 6)
    torch.testing.assert_close(kernel(x).to_dense(), gp_ntk.NNGPKernel(depth=2)(x[:, [0, 5]]).to_dense())


def test_deepcopy_keeps_the_exact_values():
    kernel = gp_ntk.NNGPKernel(depth=2, weight_variance=0.3)
    clone = copy.deepcopy(kernel).double()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(clone.weight_variance) == pytest.approx(0.3, rel=1e-15, abs=0)


def test_same_points_accepts_one_view_twice_and_refuses_aliases_that_differentiate_apart():
    from gp_ntk.kernels._contract import same_points

    base = torch.rand(7, 3, dtype=torch.float64).requires_grad_(True)
    full = torch.cat([base, base * 2], dim=-2)
    assert same_points(base, base)
    assert same_points(full[4:], full[4:])  # GPyTorch's test block: two slices, one place
    assert not same_points(full[4:], full[3:])  # another place
    assert not same_points(full[4:], full[4:].clone())  # a copy (equal values, own gradient)
    assert not same_points(full[4:], full[4:].detach())  # an alias that takes no gradient
    assert not same_points(base.detach(), base.detach().requires_grad_(True))
    square = torch.rand(3, 3, dtype=torch.float64)
    assert not same_points(square, square.mT)  # one memory read two ways
    assert same_points(square.detach(), square.detach())  # no gradients: one memory, one way
    assert not same_points(square, square.float())


@pytest.mark.parametrize(
    "build",
    [
        lambda: gp_ntk.NTKKernel(depth=3, bias_variance=0.1, ard_num_dims=3),
        lambda: gp_ntk.kernels.UnitVarianceKernel(gp_ntk.NTKKernel(depth=3, bias_variance=0.1)),
        lambda: gp_ntk.NNGPKernel(depth=2, activation="erf"),
    ],
    ids=["ntk-ard", "unit-variance-ntk", "nngp-erf"],
)
def test_two_slices_of_one_tensor_take_the_symmetric_path_with_the_right_gradient(build):
    # exact predictions evaluate k(test, test) on two slices of cat([train, test])
    kernel = build().to(torch.float64)
    generator = torch.Generator().manual_seed(3)
    train = torch.rand(2, 6, 3, generator=generator, dtype=torch.float64) * 2 - 1
    test = (torch.rand(2, 5, 3, generator=generator, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    full = torch.cat([train, test], dim=-2)
    K = kernel(full[..., 6:, :], full[..., 6:, :]).to_dense()
    # bitwise: the property is that it is the very computation of k(X, X) on the same memory
    rows = full[..., 6:, :]
    assert torch.equal(K, kernel(rows, rows).to_dense())
    assert torch.equal(K, K.mT)
    (grad,) = torch.autograd.grad(K.sum(), test)
    # the reference: two independent copies, each argument differentiated on its own
    left, right = test.detach().clone().requires_grad_(True), test.detach().clone().requires_grad_(True)
    expected = kernel(left, right).to_dense()
    torch.testing.assert_close(K, expected, rtol=1e-12, atol=1e-13)
    grads = torch.autograd.grad(expected.sum(), (left, right))
    torch.testing.assert_close(grad, grads[0] + grads[1], rtol=1e-9, atol=1e-11)
    # an alias that takes no gradient stays a one-sided derivative
    one_sided = kernel(test, test.detach()).to_dense()
    (grad_one_sided,) = torch.autograd.grad(one_sided.sum(), test)
    torch.testing.assert_close(grad_one_sided, grads[0], rtol=1e-9, atol=1e-11)
