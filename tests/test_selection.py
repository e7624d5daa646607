"""gp_ntk.selection: ranking kernels by log marginal likelihood."""

from __future__ import annotations

import math

import gpytorch
import pytest
import torch
from linear_operator.utils.errors import NotPSDError

import gp_ntk
from gp_ntk.selection import compare_kernels, format_table, kernel_grid


def test_kernel_grid_names_and_fresh_kernels():
    grid = kernel_grid(depths=(1, 4), activations=("relu",), kinds=("ntk",), baselines=("rbf",))
    assert list(grid) == ["ntk-relu-d1", "ntk-relu-d4", "rbf"]
    assert grid["ntk-relu-d4"].depth == 4 and isinstance(grid["ntk-relu-d1"], gp_ntk.NTKKernel)
    assert kernel_grid()["ntk-relu-d1"] is not kernel_grid()["ntk-relu-d1"]


@pytest.mark.slow
def test_compare_kernels_ranks_the_generating_kernel_above_a_mismatched_one(float64_default):
    # data from a linear function: the identity-activation NNGP (a linear kernel) explains it
    # with far fewer effective degrees of freedom than a deep step-activation kernel
    g = torch.Generator().manual_seed(0)
    x = torch.randn(150, 3, generator=g)
    y = x @ torch.tensor([1.0, -0.5, 2.0]) + 0.05 * torch.randn(150, generator=g)
    rows = compare_kernels(
        x,
        y,
        {"linear": gp_ntk.NNGPKernel(1, "identity"), "step-d3": gp_ntk.NNGPKernel(3, "step")},
        max_iter=150,
        progress=False,
        keep_models=True,
    )
    assert [r.name for r in rows] == ["linear", "step-d3"]
    assert rows[0].log_marginal_likelihood > rows[1].log_marginal_likelihood + 10
    n = y.shape[0]
    assert rows[0].log_marginal_likelihood == pytest.approx(rows[0].per_point * n)
    assert isinstance(rows[0].model, gp_ntk.ExactGPModel)
    table = format_table(rows)
    assert "linear" in table and "step-d3" in table and "vs best" in table


class _AlwaysFails(gpytorch.kernels.RBFKernel):
    def forward(self, *args, **kwargs):
        raise NotPSDError("always (test)")


def test_failed_candidate_is_reported_not_fatal():
    x = torch.randn(30, 2, dtype=torch.float64)
    y = x[:, 0].clone()
    rows = compare_kernels(
        x, y, {"ok": "rbf", "bad": _AlwaysFails()}, max_iter=10, max_recoveries=1, progress=False
    )
    assert rows[0].name == "ok" and rows[-1].status == "failed"
    assert rows[-1].log_marginal_likelihood == -math.inf


def test_compare_kernels_needs_candidates():
    with pytest.raises(ValueError, match="non-empty mapping"):
        compare_kernels(torch.randn(5, 2), torch.randn(5), {})
    with pytest.raises(ValueError, match="candidate 'typo' must be"):
        compare_kernels(torch.randn(5, 2), torch.randn(5), {"typo": "rbff"})
    with pytest.raises(ValueError, match="train_y contains NaN"):
        compare_kernels(torch.randn(5, 2), torch.tensor([1.0, math.nan, 0.0, 1.0, 2.0]), {"rbf": "rbf"})


class _Raises(gpytorch.kernels.RBFKernel):
    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def forward(self, *args, **kwargs):
        raise self.error


def test_an_overflowing_candidate_is_a_failed_row():
    torch.manual_seed(0)
    x = torch.randn(30, 3)
    y = torch.sin(x[:, 0])
    rows = compare_kernels(
        x,
        y,
        {"rbf": "rbf", "bad": gp_ntk.NNGPKernel(depth=100, weight_variance=10.0)},
        max_iter=5,
        max_recoveries=1,
        progress=False,
    )
    assert [r.name for r in rows] == ["rbf", "bad"]
    assert rows[0].status != "failed" and math.isfinite(rows[0].log_marginal_likelihood)
    assert rows[1].status == "failed" and rows[1].log_marginal_likelihood == -math.inf
    assert "overflowed" in rows[1].error
    assert "failed" in format_table(rows)


@pytest.mark.parametrize(
    "error",
    [
        FloatingPointError("overflow (test)"),
        RuntimeError("linalg.cholesky: The factorization could not be completed (test)"),
        ValueError("refused at these inputs (test)"),
        ZeroDivisionError("division (test)"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_candidate_raising_a_numerical_error_is_a_failed_row(error):
    x = torch.randn(20, 2, dtype=torch.float64)
    rows = compare_kernels(
        x,
        x[:, 0].clone(),
        {"ok": "rbf", "bad": _Raises(error)},
        optimizer="adam",
        max_iter=3,
        max_recoveries=0,
        progress=False,
    )
    assert rows[-1].name == "bad" and rows[-1].status == "failed"
    assert type(error).__name__ in rows[-1].error and rows[0].status != "failed"


def test_programming_errors_and_ctrl_c_still_propagate():
    x = torch.randn(20, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="bug"):
        compare_kernels(x, x[:, 0].clone(), {"bad": _Raises(TypeError("bug (test)"))}, progress=False)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        compare_kernels(
            x,
            x[:, 0].clone(),
            {"ok": "rbf", "stop": _Raises(KeyboardInterrupt()), "never": "rbf"},
            max_iter=3,
            progress=False,
        )
    assert [r.name for r in interrupted.value.rows] == ["ok", "stop"]


def test_default_comparison_is_small_and_the_full_grid_opt_in(monkeypatch):
    # the default answers "network kernel or not, which one" with five fits; "full" is the grid
    from gp_ntk import selection

    seen = {}

    def fake_fit(model, **kwargs):
        seen.setdefault("kwargs", kwargs)
        seen["count"] = seen.get("count", 0) + 1
        raise selection.FitError("not fitted (test)")

    monkeypatch.setattr(selection, "fit", fake_fit)
    x = torch.randn(12, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rows = compare_kernels(x, x[:, 0].clone(), progress=False)
    assert sorted(r.name for r in rows) == sorted(selection.default_candidates())
    assert seen["count"] == 5 and seen["kwargs"]["optimizer"] == "lbfgs"
    seen.clear()
    compare_kernels(x, x[:, 0].clone(), "full", progress=False)
    assert seen["count"] == len(selection.kernel_grid())
    with pytest.raises(ValueError, match="full"):
        compare_kernels(x, x[:, 0].clone(), "everything")
