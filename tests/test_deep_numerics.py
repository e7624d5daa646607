"""Numerics of deep kernels: identical points, underflow, extreme input scales, error causes."""

from __future__ import annotations

import pytest
import torch

import gp_ntk
from gp_ntk.activations import ACTIVATIONS, ArcCos, Numerical

ONE_PIECE = gp_ntk.settings.block_evaluation(min_elements=10**12)


def _blocked(block_elements: int = 60):
    return gp_ntk.settings.block_evaluation(min_elements=0, block_elements=block_elements)


def _lazy(block_elements: int = 60):
    return gp_ntk.settings.lazy_evaluation("always", block_elements=block_elements)


def _activations() -> dict[str, gp_ntk.activations.Activation]:
    found = {name: make() for name, make in ACTIVATIONS.items()}
    found["arccos2"] = ArcCos(2)
    found["numerical-tanh"] = Numerical(torch.tanh, degree=12)
    return found


ACTIVATION_OBJECTS = _activations()
# the tolerances of "equal to the variance map" and of PSD-ness (min eigenvalue / max)
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def _points(n: int, dtype: torch.dtype, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(n, 4, generator=g, dtype=torch.float64)
    x[-1] = x[0]  # a duplicated row
    return x.to(dtype)


def _kernel(name: str, depth: int, weight_variance: float, dtype: torch.dtype) -> gp_ntk.NNGPKernel:
    return gp_ntk.NNGPKernel(depth, ACTIVATION_OBJECTS[name], weight_variance, 0.1).to(dtype)


def _scale_for(name: str) -> float:
    # ArcCos(2) squares the variance in every layer: below variance ~0.5 it converges
    return 0.4 if name == "arccos2" else 1.0


# ------------------------------------------------------------------ identical points


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("weight_variance", [1.0, 4.0])
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name.startswith("numerical") else name
        for name in sorted(ACTIVATION_OBJECTS)
    ],
)
def test_deep_diagonal_is_the_variance_and_matrix_is_psd(name, weight_variance, dtype):
    # In the chaotic regime (erf, sin, gelu with weight_variance 4) rounding at c = 1 grows
    # exponentially with depth; identical points must come from the variance map.
    depths = [10] if name == "numerical-tanh" else [10, 30]
    x = _points(12, dtype, scale=_scale_for(name))
    tol = TOLERANCE[dtype]
    for depth in depths:
        kernel = _kernel(name, depth, weight_variance, dtype)
        try:
            with torch.no_grad():
                nngp, ntk = kernel.nngp_and_ntk(x, x)
                nngp_diag, ntk_diag = kernel.nngp_and_ntk(x, x, diag=True)
        except FloatingPointError:
            # variance maps that diverge with depth are refused, not returned: squares of 4 v**2
            # (ArcCos(2)), exp(2 v) (Exp)
            assert (name == "arccos2" and weight_variance == 4.0) or name == "exp", (name, weight_variance)
            continue
        for matrix, diagonal in ((nngp, nngp_diag), (ntk, ntk_diag)):
            torch.testing.assert_close(matrix.diagonal(), diagonal, rtol=tol, atol=0.0)
            # the duplicated row: its entry with its twin is the variance as well
            torch.testing.assert_close(matrix[0, -1], diagonal[0], rtol=tol, atol=0.0)
            assert torch.equal(matrix, matrix.mT)
            eigenvalues = torch.linalg.eigvalsh(matrix.double())
            assert float(eigenvalues.min()) >= -tol * float(eigenvalues.max()), (depth, name)


@pytest.mark.parametrize("name", ["erf", "sin", "gelu"])
def test_chaotic_float32_diagonal_matches_float64(name):
    # diag=True is the right value (its float64 evaluation agrees); the full matrix follows it
    x = _points(10, torch.float64)
    k64 = gp_ntk.NNGPKernel(30, name, 4.0, 0.1).double()
    k32 = gp_ntk.NNGPKernel(30, name, 4.0, 0.1)
    with torch.no_grad():
        reference = k64(x, diag=True)
        full = k32(x.float()).to_dense().diagonal().double()
    torch.testing.assert_close(full, reference, rtol=1e-3, atol=0.0)


@pytest.mark.parametrize("symmetric", [True, False], ids=["k(X,X)", "k(X,Y)"])
def test_identical_points_in_blocked_and_lazy_evaluation(symmetric):
    dtype = torch.float64
    x = _points(23, dtype)
    x[5] = x[3]
    y = x if symmetric else torch.cat([_points(9, dtype, seed=1), x[:4]])
    kernel = gp_ntk.NTKKernel(40, "sin", 4.0, 0.1).double()
    with torch.no_grad():
        with ONE_PIECE:
            dense = kernel(x, y).to_dense()
        with _blocked():
            blocked = kernel(x, y).to_dense()
        with _lazy():
            lazy = kernel(x, y).to_dense()
        diagonal = kernel(x, diag=True)
    torch.testing.assert_close(blocked, dense, rtol=1e-13, atol=0.0)
    torch.testing.assert_close(lazy, dense, rtol=1e-13, atol=0.0)
    columns = [3, 5, 0, 22] if symmetric else [12, 12, 9, 9]
    rows = [5, 3, 22, 0] if symmetric else [3, 5, 0, 22]
    # (x[5] = x[3] and x[22] = x[0]; y's last four rows are x[:4])
    expected = diagonal[torch.tensor(rows)]
    torch.testing.assert_close(
        dense[torch.tensor(rows), torch.tensor(columns)], expected, rtol=1e-13, atol=0.0
    )


@pytest.mark.slow
def test_identical_points_in_compiled_evaluation():
    x = _points(30, torch.float32)
    x[7] = x[2]
    y = torch.cat([x[:5], _points(6, torch.float32, seed=1)])
    kernel = gp_ntk.NNGPKernel(8, "erf", 4.0, 0.1)
    with torch.no_grad():
        with ONE_PIECE:
            eager = [kernel(x).to_dense(), kernel(x, y).to_dense()]
        with _blocked(200), gp_ntk.settings.compile_kernels("always"):
            compiled = [kernel(x).to_dense(), kernel(x, y).to_dense()]
        diagonal = kernel(x, diag=True)
    # distinct points: fused and eager float32 arithmetic round differently, and in this chaotic
    # regime (weight_variance 4) eight layers amplify that to ~1e-5 (measured up to 1.5e-5) of
    # the kernel's scale; entries far below the scale differ by more than 1e-4 of themselves
    # (1.5e-4 measured on one CPU), so the absolute tolerance is relative to the largest entry
    for got, expected in zip(compiled, eager):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    torch.testing.assert_close(compiled[0].diagonal(), diagonal, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(compiled[0][2, 7], diagonal[2], rtol=1e-6, atol=0.0)
    torch.testing.assert_close(compiled[1][2, 2], diagonal[2], rtol=1e-6, atol=0.0)
    assert torch.equal(compiled[0], compiled[0].mT)


def test_elementwise_diagonal_of_equal_copies_is_the_variance():
    x = _points(8, torch.float32)
    kernel = gp_ntk.NNGPKernel(30, "erf", 4.0, 0.1)
    with torch.no_grad():
        torch.testing.assert_close(kernel(x, x.clone(), diag=True), kernel(x, diag=True), rtol=1e-6, atol=0.0)


def test_gradients_at_duplicates_match_finite_differences():
    x = _points(5, torch.float64).requires_grad_(True)
    kernel = gp_ntk.NNGPKernel(6, "erf", 2.0, 0.1).double()

    def total(z):
        with ONE_PIECE:
            return kernel(z).to_dense().sum()

    torch.autograd.gradcheck(lambda z: total(z), (x,))


# ------------------------------------------------------------------ underflow


@pytest.mark.parametrize("cls, depth", [(gp_ntk.NTKKernel, 175), (gp_ntk.NNGPKernel, 150)])
def test_variances_collapsing_through_depth_are_reported(cls, depth):
    # relu halves the variance per layer at weight_variance 1: 2**-150 is below float32's range
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    kernel = cls(depth=depth, weight_variance=1.0, bias_variance=0.0)
    with pytest.raises(
        FloatingPointError, match="underflowed in torch.float32.*float64.*larger weight_variance"
    ):
        kernel(x).to_dense()
    with pytest.raises(FloatingPointError, match="underflowed"):
        kernel(x, diag=True)
    with gp_ntk.settings.check_finite(False):
        kernel(x).to_dense()
    # float64 holds it: positive definite, and homogeneous like the shallow kernel
    k64 = cls(depth=depth, weight_variance=1.0, bias_variance=0.0).double()
    matrix = k64(x.double()).to_dense()
    eigenvalues = torch.linalg.eigvalsh(matrix)
    assert float(eigenvalues.min()) > -1e-12 * float(eigenvalues.max()) and float(eigenvalues.max()) > 0


def test_subnormal_first_layer_of_a_non_homogeneous_kernel_is_reported():
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)) * 1e-40
    with pytest.raises(FloatingPointError, match="underflowed in torch.float32 in its first layer"):
        gp_ntk.NNGPKernel(2, "erf", 1.0, 0.0)(x).to_dense()


# ------------------------------------------------------------------ extreme input scales


def test_tiny_inputs_of_a_bias_free_kernel_are_finite_and_homogeneous():
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    kernel = gp_ntk.NNGPKernel(depth=2, bias_variance=0.0)
    reference = gp_ntk.NNGPKernel(depth=2, bias_variance=0.0).double()(x.double()).to_dense() * 1e-42
    with gp_ntk.settings.check_finite(False):
        tiny = kernel(x * 1e-21).to_dense()
    assert torch.isfinite(tiny).all()
    # the true values are float32 subnormals (quantum 1.4e-45)
    assert float((tiny.double() - reference).abs().max()) <= 1e-3 * float(reference.abs().max()) + 1e-44


@pytest.mark.parametrize(
    "dtype, scale",
    [(torch.float32, 1e19), (torch.float32, 1e-25), (torch.float64, 1e-160), (torch.float64, 1e150)],
)
@pytest.mark.parametrize("activation", ["step", "relu", "abs"])
def test_bias_free_homogeneous_kernels_scale_exactly(activation, dtype, scale):
    # k(a x, b y) = (ab)**(r**depth) k(x, y): the step kernel (r = 0) is scale-free, the ReLU
    # family (r = 1) scales like the inner product
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 3, generator=g, dtype=dtype), torch.randn(5, 3, generator=g, dtype=dtype)
    for cls in (gp_ntk.NNGPKernel, gp_ntk.NTKKernel):
        kernel = cls(3, activation, 2.0, 0.0).to(dtype)
        degree = 0 if activation == "step" else 1
        # a power of two near the scale keeps the expected value exact
        factor = 2.0 ** round(torch.log2(torch.tensor(scale, dtype=torch.float64)).item())
        with torch.no_grad():
            base = kernel(x, y).to_dense().double()
            scaled = kernel(x * factor, y).to_dense().double()
        torch.testing.assert_close(scaled, base * factor**degree, rtol=TOLERANCE[dtype] * 10, atol=0.0)
        if degree == 0:  # (a variance of the ReLU family scales by factor**2, beyond the dtype)
            with torch.no_grad():
                scaled_square = kernel(x * factor).to_dense().double()
                diag = kernel(x * factor, diag=True).double()
            torch.testing.assert_close(scaled_square, kernel(x).to_dense().double(), rtol=1e-6, atol=0.0)
            torch.testing.assert_close(diag, kernel(x, diag=True).double(), rtol=1e-6, atol=0.0)


def test_gradients_of_rescaled_inputs_are_the_scaled_gradients():
    # k(s x, y) = s k(x, y) for bias-free ReLU: d/dx' k(x', y) at x' = s x is grad_x k(x, y)
    g = torch.Generator().manual_seed(2)
    x, y = (
        torch.randn(4, 3, generator=g, dtype=torch.float64),
        torch.randn(3, 3, generator=g, dtype=torch.float64),
    )
    kernel = gp_ntk.NTKKernel(3, "relu", 2.0, 0.0).double()
    factor = 2.0**-600
    with ONE_PIECE:
        base = x.clone().requires_grad_(True)
        (grad_base,) = torch.autograd.grad(kernel(base, y).to_dense().sum(), base)
        scaled = (x * factor).requires_grad_(True)
        (grad_scaled,) = torch.autograd.grad(kernel(scaled, y).to_dense().sum(), scaled)
    assert torch.isfinite(grad_scaled).all()
    torch.testing.assert_close(grad_scaled, grad_base, rtol=1e-12, atol=0.0)


def test_high_order_arc_cosine_kernel_rescales_exactly():
    # ArcCos(2) without bias, two layers: k(a x, a y) = a**(2 * 2**2) k(x, y)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    kernel = gp_ntk.ArcCosineKernel(order=2, num_layers=2, bias_variance=0.0).double()
    factor = 2.0**40
    with torch.no_grad():
        torch.testing.assert_close(
            kernel(x * factor).to_dense(), kernel(x).to_dense() * factor**8, rtol=1e-12, atol=0.0
        )


# ------------------------------------------------------------------ what a non-finite value means


def _log(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x)


def _nan_far_out(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() > 10.0, torch.full_like(x, float("nan")), torch.tanh(x))


def test_non_finite_activation_is_named():
    # Numerical refuses a function that is not finite on the real line at construction; one
    # that passes that probe but returns NaN further out is named when the kernel meets it
    with pytest.raises(ValueError, match="fn must be finite"):
        Numerical(_log, degree=8)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(FloatingPointError, match="activation Numerical.*returned non-finite values") as info:
        gp_ntk.NNGPKernel(2, Numerical(_nan_far_out, degree=8), weight_variance=50.0)(x).to_dense()
    assert "weight_variance**depth" not in str(info.value)


def test_first_layer_overflow_of_large_inputs_is_named():
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)) * 1e20
    with pytest.raises(FloatingPointError, match="first layer's covariances overflow.*inputs as large as"):
        gp_ntk.NNGPKernel(2)(x).to_dense()
    with pytest.raises(FloatingPointError, match="first layer's covariances overflow"):
        gp_ntk.NNGPKernel(2)(x, diag=True)


def test_high_order_power_overflow_is_named():
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    x = 4.0 * x / x.norm(dim=-1, keepdim=True)
    with pytest.raises(FloatingPointError, match="raises the variance to the power 20") as info:
        gp_ntk.ArcCosineKernel(order=20)(x).to_dense()
    assert "weight_variance**depth" not in str(info.value)


def test_overflow_of_the_value_of_a_rescaled_kernel_is_named():
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)) * 1e19
    with pytest.raises(FloatingPointError, match="scales like"):
        gp_ntk.NNGPKernel(3, "abs", 2.0, 0.0)(x).to_dense()


def test_depth_overflow_still_names_weight_variance_and_depth():
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(FloatingPointError, match="overflowed in torch.float32.*through depth.*depth=50"):
        gp_ntk.NTKKernel(50, "relu", 16.0, 0.1)(x).to_dense()
    with _lazy(), pytest.raises(FloatingPointError, match="through depth"):
        gp_ntk.NNGPKernel(50, "relu", 16.0, 0.1)(x).to_dense()


def test_gradients_of_pairs_of_equal_copies_are_shared():
    # k(x, x') at x' = x: each argument gets the partial derivative, half the variance map's
    x = _points(4, torch.float64)
    kernel = gp_ntk.NNGPKernel(8, "sin", 4.0, 0.1).double()
    left, right = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    grad_left, grad_right = torch.autograd.grad(kernel(left, right, diag=True).sum(), (left, right))
    same = x.clone().requires_grad_(True)
    (grad_same,) = torch.autograd.grad(kernel(same, diag=True).sum(), same)
    torch.testing.assert_close(grad_left, grad_right, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad_left + grad_right, grad_same, rtol=1e-10, atol=1e-14)


def test_identical_points_of_batched_inputs():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 6, 2, generator=g, dtype=torch.float64)
    x[:, -1] = x[:, 0]
    y = torch.cat([x[:, :2], torch.randn(3, 4, 2, generator=g, dtype=torch.float64)], dim=-2)
    kernel = gp_ntk.NNGPKernel(20, "erf", 4.0, 0.1, batch_shape=torch.Size([3])).double()
    with torch.no_grad():
        diagonal = kernel(x, diag=True)
        torch.testing.assert_close(
            kernel(x).to_dense().diagonal(dim1=-2, dim2=-1), diagonal, rtol=1e-13, atol=0.0
        )
        torch.testing.assert_close(kernel(x, y).to_dense()[:, -1, 0], diagonal[:, 0], rtol=1e-13, atol=0.0)
