"""gp_ntk.validation: every check accepts what it should, and refuses the rest by name."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gp_ntk.validation import check_bounds, check_int, check_number, check_rows_finite, check_tensor


def test_check_int_accepts_integers_in_range_and_returns_python_ints() -> None:
    assert check_int(3, "depth") == 3
    value = check_int(np.int64(4), "depth")
    assert value == 4 and type(value) is int
    assert check_int(0, "order", minimum=0) == 0
    assert check_int(-5, "seed", minimum=None) == -5
    assert check_int(7, "degree", minimum=2, maximum=7) == 7


@pytest.mark.parametrize(
    "value, kwargs, message",
    [
        (0, {}, "depth must be a positive integer, got 0"),
        (True, {}, "depth must be a positive integer, got True"),
        (2.0, {}, "depth must be a positive integer, got 2.0"),
        (-1, {"minimum": 0}, "depth must be a non-negative integer"),
        (1, {"minimum": 2}, r"depth must be an integer >= 2"),
        (9, {"minimum": 2, "maximum": 8}, r"depth must be an integer in \[2, 8\]"),
        ("3", {"minimum": None}, "depth must be an integer, got '3'"),
    ],
)
def test_check_int_refuses_by_name(value, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_int(value, "depth", **kwargs)


def test_check_number_ranges_and_non_finite_values() -> None:
    assert check_number(0, "lr", minimum=0) == 0.0
    assert check_number(np.float32(0.5), "lr", minimum=0, strict_minimum=True) == 0.5
    assert check_number(math.inf, "scale", finite=False) == math.inf
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got 0"):
        check_number(0, "lr", minimum=0, strict_minimum=True)
    with pytest.raises(ValueError, match=r"tolerance must be a finite number >= 0 and < 1, got 1"):
        check_number(1, "tolerance", minimum=0, maximum=1, strict_maximum=True)
    for bad in (math.nan, math.inf, True, "1", None):
        with pytest.raises(ValueError, match="lr must be a finite number"):
            check_number(bad, "lr")
    # NaN is refused even where infinities are allowed: it would fail every later comparison
    with pytest.raises(ValueError, match="scale must be a number"):
        check_number(math.nan, "scale", finite=False)


def test_check_tensor_shape_and_finiteness() -> None:
    x = torch.zeros(4, 3)
    assert check_tensor(x, "x", ndim=2, last_dim=3) is x
    assert check_tensor(torch.zeros(2, 4, 3), "x", min_ndim=2, last_dim=3).shape == (2, 4, 3)
    with pytest.raises(
        ValueError, match="x must be a floating-point torch.Tensor, got tensor of dtype torch.int64"
    ):
        check_tensor(torch.zeros(3, dtype=torch.long), "x")
    with pytest.raises(ValueError, match="x must be a floating-point torch.Tensor, got list"):
        check_tensor([0.0], "x")
    with pytest.raises(ValueError, match=r"x must have 2 dimension\(s\), got shape \(3,\)"):
        check_tensor(torch.zeros(3), "x", ndim=2)
    with pytest.raises(ValueError, match=r"x must have at least 2 dimension\(s\)"):
        check_tensor(torch.zeros(3), "x", min_ndim=2)
    with pytest.raises(ValueError, match="x must have 2 features in its last dimension, got shape"):
        check_tensor(x, "x", last_dim=2)
    bad = x.clone()
    bad[1, 0] = math.nan
    bad[3, 2] = math.inf
    with pytest.raises(ValueError, match=r"x contains NaN or infinite values in 2 row\(s\)"):
        check_tensor(bad, "x")
    assert check_tensor(bad, "x", finite=False) is bad


def test_check_rows_finite_counts_rows_of_vectors_and_batches() -> None:
    y = torch.tensor([0.0, math.nan, 1.0, math.nan])
    with pytest.raises(ValueError, match=r"y contains NaN or infinite values in 2 row\(s\); drop them"):
        check_rows_finite(y, "y", "drop them")
    batch = torch.zeros(2, 3, 4)
    batch[1, 2, 0] = math.inf
    with pytest.raises(ValueError, match=r"1 row\(s\)"):
        check_rows_finite(batch, "X")


@pytest.mark.parametrize(
    "bounds, message",
    [
        ([[0.0], [1.0]], "bounds must be a 2 x d floating-point tensor, got list"),
        (torch.zeros(3, 2), r"bounds must have shape \(2, d\)"),
        (torch.tensor([[0.0, 0.0], [1.0, math.nan]]), "bounds must be finite"),
        (torch.tensor([[0.0, 1.0], [1.0, 1.0]]), r"not so in columns \[1\]"),
    ],
)
def test_check_bounds_refuses_by_name(bounds, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_bounds(bounds)


def test_check_bounds_checks_the_number_of_columns() -> None:
    bounds = torch.tensor([[0.0, -1.0], [1.0, 1.0]])
    assert check_bounds(bounds, 2) is bounds
    with pytest.raises(ValueError, match="box must have 3 columns"):
        check_bounds(bounds, 3, name="box")
