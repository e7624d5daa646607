"""Blocked lazy evaluation: the same numbers as the dense kernel, with bounded block sizes."""

from __future__ import annotations

import shutil
import warnings

import gpytorch
import pytest
import torch
from _helpers import KERNELS, break_compiler, singular_inputs

import gp_ntk
from gp_ntk.engine.lazy import BlockedKernelLinearOperator

VARIANTS = {
    "nngp-relu": lambda: KERNELS["nngp-relu"](0.1),
    "ntk-relu-nobias": lambda: KERNELS["ntk-relu"](0.0),
    "ntk-erf-ard": lambda: gp_ntk.NTKKernel(2, "erf", 1.5, 0.2, ard_num_dims=4),
    "ntk-per-layer": lambda: gp_ntk.NTKKernel(2, "gelu", [1.0, 2.0, 1.5], [0.1, 0.2, 0.3]),
    "arccos0-2layers": lambda: KERNELS["arccos0"](0.5),
    "erf-williams-ard": lambda: gp_ntk.ErfKernel([1.0, 2.0, 0.5, 1.5], 0.3, ard_num_dims=4),
    "ntk-batch": lambda: gp_ntk.NTKKernel(2, "relu", 2.0, 0.1, batch_shape=torch.Size([2])),
}


def _inputs(n: int, dtype=torch.float64, seed: int = 0, batch=(), singular: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, n, 4, generator=g, dtype=torch.float64)
    if singular:
        # duplicates, a parallel and an anti-parallel row
        x[..., 1, :] = x[..., 0, :]
        x[..., 2, :] = 3.0 * x[..., 0, :]
        x[..., 3, :] = -x[..., 0, :]
    return x.to(dtype)


def _lazy(kernel, x1, x2, block_elements=60):
    with gp_ntk.settings.lazy_evaluation("always", block_elements=block_elements):
        op = kernel(x1, x2).evaluate_kernel()
    assert isinstance(op, BlockedKernelLinearOperator)
    return op


def _dense(kernel, x1, x2):
    with gp_ntk.settings.lazy_evaluation("never"):
        return kernel.forward(x1, x2)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("singular", [False, True])
def test_blocked_matmul_and_diagonal_match_dense(name, symmetric, singular, float64_default):
    kernel = VARIANTS[name]()
    batch = (2,) if name == "ntk-batch" else ()
    x1 = _inputs(23, batch=batch, singular=singular)
    x2 = x1 if symmetric else _inputs(17, seed=1, batch=batch)
    dense = _dense(kernel, x1, x2)
    rhs = torch.randn(*dense.shape[:-2], dense.shape[-1], 3, dtype=torch.float64)
    # Between distinct rows that are duplicates or parallel, the correlation is 1 only up to the
    # rounding of a dot product, which a block sums in another order than the full matrix; cusp
    # kernels (arccos J_0 in the ReLU NTK, step) turn that eps into sqrt(eps) ~ 1.5e-8. Elsewhere
    # both paths agree to rounding.
    atol = 1e-7 * float(dense.abs().max()) if singular else 1e-12
    with gp_ntk.settings.lazy_evaluation("always", block_elements=60):
        op = _lazy(kernel, x1, x2)
        torch.testing.assert_close(op @ rhs, dense @ rhs, rtol=1e-12, atol=atol * 3 * x2.shape[-2])
        if not batch:
            torch.testing.assert_close(
                op @ rhs[:, 0], dense @ rhs[:, 0], rtol=1e-12, atol=atol * 3 * x2.shape[-2]
            )
        torch.testing.assert_close(op.to_dense(), dense, rtol=1e-12, atol=1e-12)
        if symmetric:
            # the diagonal from the kernel's diag path: correlation exactly 1, no sqrt(eps) error
            torch.testing.assert_close(op.diagonal(), dense.diagonal(dim1=-2, dim2=-1), rtol=1e-13, atol=0)
        # slices (as ExactGP's prediction strategy takes them) stay blocked and agree; an
        # off-centre slice of a symmetric matrix evaluates its K_ii as cross terms, where the
        # correlation is 1 only up to O(eps): each composed cusp layer takes the square root
        # of that error (arccos0 over two layers: eps**(1/4))
        part = op[..., 5:20, 2:11]
        assert isinstance(part, BlockedKernelLinearOperator)
        composed_cusps = 2 if name == "arccos0-2layers" else 1
        cross_atol = 4.0 * (2.0 * torch.finfo(torch.float64).eps) ** (0.5**composed_cusps)
        cross_atol *= float(dense.abs().max())
        torch.testing.assert_close(part.to_dense(), dense[..., 5:20, 2:11], rtol=1e-12, atol=cross_atol)


def test_symmetric_float32_blocks_agree_with_dense_at_the_singular_set():
    # cross-evaluated arccos near c = 1 is off by sqrt(eps) ~ 3e-4 in float32: the exact
    # diagonal written into each block keeps lazy and dense together
    kernel = gp_ntk.NTKKernel(3, "relu", 2.0, 0.0)
    x = singular_inputs(torch.float32, zero_row=True).repeat(3, 1)
    x = x + 0.0 * torch.arange(x.shape[0], dtype=torch.float32)[:, None]
    dense = _dense(kernel, x, x)
    op = _lazy(kernel, x, x, block_elements=2 * x.shape[0])
    v = torch.randn(x.shape[0], 2)
    scale = dense.abs().max()
    assert float(((op @ v) - dense @ v).abs().max()) <= 2e-6 * float(scale) * x.shape[0]
    torch.testing.assert_close(op.diagonal(), dense.diagonal(), rtol=1e-6, atol=0)


def test_block_never_exceeds_the_budget():
    kernel = gp_ntk.NNGPKernel(2, "relu", 2.0, 0.1)
    x = torch.randn(300, 4, dtype=torch.float64)
    shapes = []
    original = kernel._block

    def spy(side1, side2, outputs, variances):
        shapes.append((side1.points.shape[-2], side2.points.shape[-2], False))
        return original(side1, side2, outputs, variances)

    kernel._block = spy
    with gp_ntk.settings.lazy_evaluation("always", block_elements=3000):
        # symmetric: the blocks on and above the diagonal, each entry evaluated once
        _lazy(kernel, x, x, block_elements=3000) @ torch.randn(300, 2, dtype=torch.float64)
        full = [s for s in shapes if not s[2]]
        assert full and max(rows * cols for rows, cols, _ in full) <= 3000
        squares = [rows for rows, cols, _ in full if rows == cols]
        assert sum(squares) == 300
        assert sum(rows * cols for rows, cols, _ in full) == 300 * 301 // 2 + sum(
            r * (r - 1) // 2 for r in squares
        )
        # cross: every row once, every block within the budget
        shapes.clear()
        _lazy(kernel, x, x[:250].clone(), block_elements=3000) @ torch.randn(250, 2, dtype=torch.float64)
        full = [s for s in shapes if not s[2]]
        assert max(rows * cols for rows, cols, _ in full) <= 3000
        assert sum(rows for rows, _, _ in full) == 300


@pytest.mark.parametrize(
    "name", ["nngp-relu", "ntk-erf-ard", "ntk-per-layer", "erf-williams-ard", "ntk-batch"]
)
def test_blocked_gradients_match_dense(name, float64_default):
    """u^T K v through the blocked _bilinear_derivative vs autograd through the dense matrix."""
    kernel = VARIANTS[name]()
    batch = (2,) if name == "ntk-batch" else ()
    x = _inputs(19, batch=batch).requires_grad_(True)
    u = torch.randn(*batch, 19, 2, dtype=torch.float64)
    v = torch.randn(*batch, 19, 2, dtype=torch.float64)
    params = [p for p in kernel.parameters()]

    dense_value = (u * (_dense(kernel, x, x) @ v)).sum()
    dense_grads = torch.autograd.grad(dense_value, [x, *params])

    with gp_ntk.settings.lazy_evaluation("always", block_elements=40):
        op = kernel(x, x).evaluate_kernel()
        assert isinstance(op, BlockedKernelLinearOperator)
        lazy_value = (u * op.matmul(v)).sum()
        lazy_grads = torch.autograd.grad(lazy_value, [x, *params])
    torch.testing.assert_close(lazy_value, dense_value, rtol=1e-12, atol=1e-12)
    for lazy_grad, dense_grad in zip(lazy_grads, dense_grads):
        torch.testing.assert_close(lazy_grad, dense_grad, rtol=1e-9, atol=1e-10)


def test_exact_gp_cg_path_matches_cholesky(float64_default):
    """Same model, same data: lazy CG/Lanczos MLL and gradients vs the dense Cholesky path."""
    torch.manual_seed(3)
    n = 400
    x = torch.randn(n, 3)
    y = torch.sin(2 * x[:, 0]) + 0.3 * x[:, 1] + 0.1 * torch.randn(n)

    def loss_and_grads(lazy: str, cholesky: int):
        torch.manual_seed(0)  # the stochastic log-det probes
        model = gp_ntk.models.ExactGPModel(x, y, kernel=gp_ntk.NTKKernel(2, "relu", 2.0, 0.1))
        model.likelihood.noise = 0.05
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
        with (
            gp_ntk.settings.lazy_evaluation(lazy, block_elements=20000),
            gpytorch.settings.max_cholesky_size(cholesky),
            gpytorch.settings.cg_tolerance(1e-6),
            gpytorch.settings.max_cg_iterations(2000),
            gpytorch.settings.num_trace_samples(128),
            gpytorch.settings.max_lanczos_quadrature_iterations(60),
        ):
            loss = -mll(model(x), y)
            loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        return float(loss), grads

    dense_loss, dense_grads = loss_and_grads("never", 10_000)
    lazy_loss, lazy_grads = loss_and_grads("always", 0)
    assert abs(lazy_loss - dense_loss) <= 0.01 * abs(dense_loss)
    for name, grad in dense_grads.items():
        # the log-det gradient is a stochastic trace estimate: compare at its Monte-Carlo scale
        assert torch.allclose(lazy_grads[name], grad, rtol=0.1, atol=0.02), name


def test_exact_gp_predictions_lazy_vs_dense(float64_default):
    torch.manual_seed(4)
    n = 300
    x = torch.randn(n, 2)
    y = torch.cos(x.sum(-1)) + 0.05 * torch.randn(n)
    test_x = torch.randn(40, 2)
    model = gp_ntk.models.ExactGPModel(x, y, kernel=gp_ntk.NNGPKernel(2, "erf", 1.5, 0.2))

    def predict(lazy: str, cholesky: int):
        model.prediction_strategy = None
        with (
            gp_ntk.settings.lazy_evaluation(lazy, block_elements=5000),
            gpytorch.settings.max_cholesky_size(cholesky),
            gpytorch.settings.eval_cg_tolerance(1e-10),
            gpytorch.settings.max_cg_iterations(3000),
            gpytorch.settings.fast_pred_var(False),
        ):
            return model.predict(test_x)

    # linear_operator's CG stagnates near a relative residual of 1e-6 on this system (the erf
    # NNGP matrix is numerically low-rank): compare at the accuracy CG reaches, measured on the
    # dense and on the lazy operator alike (mean within 1.2e-5, variance 7e-7 at noise 0.1)
    model.likelihood.noise = 0.1
    cholesky = predict("never", 10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gpytorch.utils.warnings.NumericalWarning)
        for lazy in ("never", "always"):
            cg = predict(lazy, 0)
            torch.testing.assert_close(cg.mean, cholesky.mean, rtol=0, atol=1e-4)
            torch.testing.assert_close(cg.variance, cholesky.variance, rtol=0, atol=1e-4)


def test_auto_mode_switches_on_size():
    kernel = gp_ntk.NNGPKernel(1, "relu")
    x = torch.randn(40, 3)
    with gp_ntk.settings.lazy_evaluation("auto", min_elements=1000):
        assert isinstance(kernel(x).evaluate_kernel(), BlockedKernelLinearOperator)
        assert not isinstance(kernel(x[:30]).evaluate_kernel(), BlockedKernelLinearOperator)
    with gp_ntk.settings.lazy_evaluation("never"):
        assert not isinstance(kernel(x).evaluate_kernel(), BlockedKernelLinearOperator)


def test_lazy_setting_refuses_bad_values():
    with pytest.raises(ValueError, match="mode"):
        gp_ntk.settings.lazy_evaluation("sometimes")
    with pytest.raises(ValueError, match="block_elements"):
        gp_ntk.settings.lazy_evaluation("always", block_elements=0)


def test_lazy_checks_inputs_before_building():
    kernel = gp_ntk.NNGPKernel(1, "relu")
    x = torch.randn(10, 3)
    x[2, 1] = float("nan")
    with gp_ntk.settings.lazy_evaluation("always"), pytest.raises(ValueError, match="NaN"):
        kernel.forward(x, x)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler")
def test_compiled_blocks_match_eager_values_and_gradients(float64_default):
    """The torch.compile path (one fused graph per layer) against eager evaluation."""
    kernel = gp_ntk.NTKKernel(2, "relu", 2.0, 0.1)
    x = _inputs(40, singular=True).requires_grad_(True)
    u, v = torch.randn(40, 2), torch.randn(40, 2)
    params = list(kernel.parameters())
    results = {}
    for mode in ("never", "always"):
        with (
            gp_ntk.settings.lazy_evaluation("always", block_elements=400),
            gp_ntk.settings.compile_kernels(mode),
        ):
            op = kernel(x, x).evaluate_kernel()
            with torch.no_grad():
                product = op @ v
            value = (u * op.matmul(v)).sum()
            results[mode] = (product, torch.autograd.grad(value, [x, *params]))
    assert not gp_ntk.settings.compile_kernels._broken, "torch.compile fell back to eager"
    eager, compiled = results["never"], results["always"]
    scale = float(eager[0].abs().max())
    # duplicate rows sit on the arccos cusp, where rounding differences grow to sqrt(eps)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-7, atol=1e-7 * scale)
    for c, e in zip(compiled[1], eager[1]):
        assert torch.isfinite(c).all()
        torch.testing.assert_close(c, e, rtol=1e-6, atol=1e-6 * float(e.abs().max()))


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch, float64_default):
    break_compiler(monkeypatch)
    kernel = gp_ntk.NNGPKernel(2, "relu", 2.0, 0.1)
    x = _inputs(30)
    v = torch.randn(30, 2)
    with (
        gp_ntk.settings.lazy_evaluation("always", block_elements=200),
        gp_ntk.settings.compile_kernels("always"),
        pytest.warns(RuntimeWarning, match="torch.compile is unavailable"),
    ):
        product = kernel(x, x).evaluate_kernel() @ v
    assert gp_ntk.settings.compile_kernels._broken
    assert not gp_ntk.settings.compile_kernels.applies(10**12)
    torch.testing.assert_close(product, _dense(kernel, x, x) @ v, rtol=1e-12, atol=1e-12)


def test_no_private_linear_operator_imports():
    # linear_operator's private modules move between releases; gp_ntk uses its public API only
    import pathlib

    package = pathlib.Path(gp_ntk.__file__).parent
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "linear_operator.operators._" in path.read_text()
    ]
    assert offenders == []
