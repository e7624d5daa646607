"""gp_ntk.kernels.unit_variance: the base kernel's correlation, exactly unit on the diagonal."""

from __future__ import annotations

import pytest
import torch

import gp_ntk
from gp_ntk.kernels import UnitVarianceKernel

DTYPE = torch.float64


@pytest.mark.parametrize(
    "base",
    [
        lambda: gp_ntk.NTKKernel(depth=3, bias_variance=0.1),
        lambda: gp_ntk.NNGPKernel(depth=2, activation="erf"),
        lambda: gp_ntk.ErfKernel(ard_num_dims=4),
    ],
    ids=["ntk", "nngp-erf", "erf-ard"],
)
def test_unit_variance_kernel_is_the_base_correlation(base) -> None:
    kernel = UnitVarianceKernel(base()).to(DTYPE)
    generator = torch.Generator().manual_seed(0)
    X = torch.rand(30, 4, generator=generator, dtype=DTYPE) * 2 - 1
    X = torch.cat([X, X[:3]])  # repeated rows
    Z = torch.rand(5, 4, generator=generator, dtype=DTYPE) * 2 - 1
    K = kernel(X).to_dense()
    assert torch.equal(K, K.T)
    assert torch.equal(K.diagonal(), torch.ones(len(X), dtype=DTYPE))
    assert torch.linalg.eigvalsh(K).min() > -1e-10
    base_kernel = kernel.base_kernel
    expected = (
        base_kernel(X, Z).to_dense()
        / torch.outer(base_kernel(X, diag=True), base_kernel(Z, diag=True)).sqrt()
    )
    torch.testing.assert_close(kernel(X, Z).to_dense(), expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(kernel(Z, diag=True), torch.ones(5, dtype=DTYPE))
    # t x q x d batches, as acquisition functions evaluate them
    batch = torch.rand(3, 2, 4, generator=generator, dtype=DTYPE)
    assert kernel(batch).to_dense().shape == (3, 2, 2)
    with pytest.raises(ValueError, match="base_kernel must be"):
        UnitVarianceKernel("ntk")


def test_unit_variance_kernel_diag_of_distinct_points_is_their_correlation() -> None:
    kernel = UnitVarianceKernel(gp_ntk.NNGPKernel(depth=3)).to(DTYPE)
    generator = torch.Generator().manual_seed(1)
    X = torch.rand(6, 4, generator=generator, dtype=DTYPE) * 2 - 1
    Z = torch.rand(6, 4, generator=generator, dtype=DTYPE) * 2 - 1
    diagonal = kernel(X, Z, diag=True)
    torch.testing.assert_close(diagonal, kernel(X, Z).to_dense().diagonal(), rtol=1e-12, atol=1e-14)
    assert bool((diagonal < 1 - 1e-3).all())  # distinct points are not fully correlated
    # equal points, also as separate tensors, have correlation exactly 1
    assert torch.equal(kernel(X, X.clone(), diag=True), torch.ones(6, dtype=DTYPE))


def test_unit_variance_kernel_one_pass_equals_three_kernel_calls() -> None:
    # gp_ntk bases supply matrix and variances together; any other GPyTorch kernel takes three calls
    import gpytorch

    generator = torch.Generator().manual_seed(2)
    X = torch.rand(9, 4, generator=generator, dtype=DTYPE) * 2 - 1
    Z = (torch.rand(3, 5, 4, generator=generator, dtype=DTYPE) * 2 - 1).requires_grad_(True)
    kernel = UnitVarianceKernel(gp_ntk.NTKKernel(depth=3, bias_variance=0.1)).to(DTYPE)
    one_pass = kernel(Z, X).to_dense()
    base_kernel = kernel.base_kernel
    three = (
        base_kernel(Z, X).to_dense()
        / (base_kernel(Z, diag=True).unsqueeze(-1) * base_kernel(X, diag=True).unsqueeze(-2)).sqrt()
    )
    torch.testing.assert_close(one_pass, three, rtol=1e-12, atol=1e-14)
    (grad_one,) = torch.autograd.grad(one_pass.sum(), Z)
    (grad_three,) = torch.autograd.grad(three.sum(), Z)
    torch.testing.assert_close(grad_one, grad_three, rtol=1e-10, atol=1e-12)
    with gp_ntk.settings.block_evaluation(min_elements=0):
        torch.testing.assert_close(kernel(Z, X).to_dense(), three.detach(), rtol=1e-12, atol=1e-14)
    rbf = UnitVarianceKernel(gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())).to(DTYPE)
    torch.testing.assert_close(
        rbf(Z, X).to_dense(), rbf.base_kernel.base_kernel(Z, X).to_dense(), rtol=1e-12, atol=1e-14
    )


def test_variance_scale_is_a_power_of_two_only_where_a_product_could_overflow() -> None:
    from gp_ntk.kernels.unit_variance import variance_scale

    small = torch.tensor([1.0, 3.0e18], dtype=torch.float32)
    assert variance_scale(small, small) is None
    large = torch.tensor([1.0, 3.0e21], dtype=torch.float32)
    scale = variance_scale(small, large)
    mantissa, _ = torch.frexp(scale)
    assert float(mantissa) == 0.5  # a power of two: scaling is exact
    assert 0.5 <= float(large.max() * scale) < 1.0
    assert variance_scale(torch.empty(0), large) is None


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "generic"])
def test_float32_rectified_square_with_large_variances_does_not_overflow(monkeypatch, fused) -> None:
    # depth-3 ReLU squared with first-layer weight variances of 500: variances near 1e23, whose
    # products overflow float32; the correlations are float64's to float32 accuracy, the matrix
    # exactly symmetric with an exactly unit diagonal, the gradients finite and float64's
    from gp_ntk.activations import ArcCos
    from gp_ntk.kernels.base import VarianceKernel

    if not fused:
        monkeypatch.setattr(VarianceKernel, "unit_variance_matrix", lambda self, a, b: None)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(12, 5, generator=generator, dtype=torch.float64) * 2 - 1
    y = torch.rand(4, 5, generator=generator, dtype=torch.float64) * 2 - 1
    results = {}
    for dtype in (torch.float64, torch.float32):
        network = gp_ntk.NTKKernel(3, ArcCos(2), 2.0, 1.0, ard_num_dims=5).to(dtype)
        with torch.no_grad():
            network.input_weight_variance = torch.full_like(network.input_weight_variance, 500.0)
        kernel = UnitVarianceKernel(network)
        a = x.to(dtype).requires_grad_(True)
        matrix, cross = kernel(a).to_dense(), kernel(a, y.to(dtype)).to_dense()
        assert network(a).to_dense().max() > 1e20  # (the variances whose products overflow)
        (grad,) = torch.autograd.grad(matrix.sum() + cross.sum(), a)
        results[dtype] = (matrix.detach(), cross.detach(), grad)
        assert torch.equal(matrix, matrix.mT)  # bitwise: exact symmetry and unit diagonal
        assert torch.equal(matrix.diagonal(), torch.ones(12, dtype=dtype))
    for single, double in zip(results[torch.float32], results[torch.float64]):
        assert bool(torch.isfinite(single).all())
        torch.testing.assert_close(single.double(), double, rtol=1e-3, atol=1e-4)
