"""gp_ntk.bo.transforms: CenteredNormalize maps the box onto [-1, 1]^d and checks its bounds."""

from __future__ import annotations

import math

import pytest
import torch
from _bo_helpers import DTYPE, PLAIN_KERNELS, ROOT, _data, _unit_bounds, single_thread_and_rng  # noqa: F401
from botorch.models.transforms.input import Normalize

import gp_ntk
import gp_ntk.bo as bo


def test_centered_normalize_maps_the_box_onto_minus_one_one() -> None:
    bounds = torch.tensor([[-5.0, 0.0, 10.0], [10.0, 1.0, 30.0]], dtype=DTYPE)
    transform = bo.CenteredNormalize(3, bounds)
    corners = torch.stack([bounds[0], bounds[1], bounds.mean(0)])
    out = transform(corners)
    torch.testing.assert_close(out, torch.tensor([[-1.0] * 3, [1.0] * 3, [0.0] * 3], dtype=DTYPE))
    torch.testing.assert_close(transform.untransform(out), corners)
    torch.testing.assert_close(transform.bounds, bounds)
    # t x q x d batches and an exact copy from the init arguments
    batch = torch.rand(4, 2, 3, dtype=DTYPE) * (bounds[1] - bounds[0]) + bounds[0]
    copy = bo.CenteredNormalize(**transform.get_init_args())
    torch.testing.assert_close(copy(batch), transform(batch))
    assert transform(batch).abs().max() <= 1.0


def test_centered_normalize_learns_the_box_from_data_and_keeps_constant_features() -> None:
    X = torch.tensor([[0.0, 3.0, 7.0], [2.0, 5.0, 7.0], [1.0, 4.0, 7.0]], dtype=DTYPE)
    transform = bo.CenteredNormalize(3)
    assert transform.learn_bounds
    out = transform(X)
    torch.testing.assert_close(out[:, :2], torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]], dtype=DTYPE))
    torch.testing.assert_close(
        out[:, 2], torch.zeros(3, dtype=DTYPE)
    )  # constant feature: shifted, not divided
    transform.eval()
    torch.testing.assert_close(transform(X), out)


@pytest.mark.parametrize(
    "bounds, message",
    [
        (torch.zeros(3, 2, dtype=DTYPE), "shape"),
        (torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=DTYPE), "columns \\[1\\]"),
        (torch.tensor([[0.0, math.nan], [1.0, 1.0]], dtype=DTYPE), "finite"),
        (torch.tensor([[0, 0], [1, 1]]), "floating-point"),
        (torch.tensor([[0.0], [1.0]], dtype=DTYPE), "2 columns"),
    ],
)
def test_bad_bounds_are_refused_by_name(bounds: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=f"bounds.*{message}|{message}.*bounds|bounds"):
        bo.CenteredNormalize(2, bounds)
    with pytest.raises(ValueError, match=message):
        bo.check_bounds(bounds, 2)


def test_centring_spreads_the_angles_a_dot_product_kernel_sees() -> None:
    """The pitfall the transform exists for, measured: in one orthant the kernel is nearly constant."""
    generator = torch.Generator().manual_seed(0)
    unit = torch.rand(200, 5, generator=generator, dtype=DTYPE)
    kernel = gp_ntk.NNGPKernel(depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1).to(DTYPE)

    def mean_correlation(x: torch.Tensor) -> float:
        K = kernel(x).to_dense()
        correlation = K / torch.outer(K.diagonal(), K.diagonal()).sqrt()
        return float(correlation[~torch.eye(len(x), dtype=torch.bool)].mean())

    on_unit_cube = mean_correlation(Normalize(5, bounds=_unit_bounds(5))(unit))
    centred = mean_correlation(bo.CenteredNormalize(5, _unit_bounds(5))(unit))
    assert on_unit_cube > 0.85
    assert centred < on_unit_cube - 0.1


def test_centered_normalize_refuses_to_learn_its_box_from_nan_inputs() -> None:
    transform = bo.CenteredNormalize(2)
    transform.train()
    X = torch.rand(5, 2, dtype=DTYPE)
    transform(X)
    bounds = transform.bounds.clone()
    X[2, 1] = math.nan
    with pytest.raises(ValueError, match="NaN or infinite entries \\(1 row\\(s\\)\\)"):
        transform(X)
    assert torch.equal(transform.bounds, bounds)
    with pytest.raises(ValueError, match="min_range"):
        bo.CenteredNormalize(2, min_range=math.nan)
