"""gp_ntk.bo.priors: LogNormal priors given by their mode, scaled by the dimension where the
kernel's first layer does not divide by it, and picklable with the model."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

import gp_ntk.bo as bo
from gp_ntk.bo import priors


@pytest.mark.parametrize("mode, scale", [(2.0, 0.5), (0.1, 1.0), (1.0, 1.0)])
def test_log_normal_has_its_mode_where_asked(mode: float, scale: float) -> None:
    prior = priors.log_normal(mode, scale)
    grid = torch.linspace(math.log(mode) - 1.0, math.log(mode) + 1.0, 20001, dtype=torch.float64).exp()
    density = prior.log_prob(grid)
    found = float(grid[density.argmax()])
    assert found == pytest.approx(mode, rel=1e-3)
    assert float(prior.scale) == pytest.approx(scale)


def test_weight_variance_mode_divides_by_the_dimension_only_for_unscaled_first_layers() -> None:
    assert priors.weight_variance_mode("ntk", None) == priors.DEFAULT_WEIGHT_VARIANCE
    assert priors.weight_variance_mode("nngp", 7) == priors.DEFAULT_WEIGHT_VARIANCE
    assert priors.weight_variance_mode("erf", 4) == pytest.approx(priors.DEFAULT_WEIGHT_VARIANCE / 4)
    assert priors.weight_variance_mode("arccos", 8) == pytest.approx(priors.DEFAULT_WEIGHT_VARIANCE / 8)
    with pytest.raises(ValueError, match="num_dims must be a positive integer"):
        priors.weight_variance_mode("erf", None)


def test_constraints_floor_the_weight_variance_on_the_nngp_scale() -> None:
    options = priors.kernel_priors("erf", 5)
    assert float(options["weight_variance_constraint"].lower_bound) == pytest.approx(priors.MIN_VARIANCE / 5)
    assert float(options["bias_variance_constraint"].lower_bound) == pytest.approx(priors.MIN_VARIANCE)
    ntk = priors.kernel_priors("ntk", None)
    assert float(ntk["weight_variance_constraint"].lower_bound) == pytest.approx(priors.MIN_VARIANCE)


def test_default_prior_modes_and_scales() -> None:
    options = priors.kernel_priors("ntk", 4)
    weight, bias = options["weight_variance_prior"], options["bias_variance_prior"]
    assert float(weight.mode) == pytest.approx(2.0) and float(weight.scale) == pytest.approx(1.0)
    assert float(bias.mode) == pytest.approx(1.0) and float(bias.scale) == pytest.approx(1.5)
    outputscale = priors.outputscale_priors()["outputscale_prior"]
    assert float(outputscale.mode) == pytest.approx(1.0) and float(outputscale.scale) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["ntk", "erf"])
def test_a_kernel_with_priors_pickles_and_keeps_them(name: str) -> None:
    kernel = bo.bo_kernel(name, 3).double()
    copy = pickle.loads(pickle.dumps(kernel))
    x = torch.rand(5, 3, dtype=torch.float64)
    torch.testing.assert_close(copy(x).to_dense(), kernel(x).to_dense())
    original = {
        name: float(prior.log_prob(closure(module)).sum())
        for name, module, prior, closure, _ in kernel.named_priors()
    }
    restored = {
        name: float(prior.log_prob(closure(module)).sum())
        for name, module, prior, closure, _ in copy.named_priors()
    }
    assert original.keys() == restored.keys() and len(original) == (4 if name == "ntk" else 3)
    for key, value in original.items():
        assert restored[key] == pytest.approx(value)
