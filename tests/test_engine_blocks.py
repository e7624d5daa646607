"""Row-block evaluation: the same matrices and gradients as one-piece evaluation."""

from __future__ import annotations

import shutil

import gpytorch
import pytest
import torch
from _helpers import KERNELS, break_compiler, singular_inputs

import gp_ntk
from gp_ntk.engine import blocks

DTYPE = torch.float64

VARIANTS = {
    "nngp-relu": lambda: KERNELS["nngp-relu"](0.1),
    "ntk-relu-nobias": lambda: KERNELS["ntk-relu"](0.0),
    "ntk-leaky": lambda: KERNELS["ntk-leaky"](0.2),
    "ntk-erf-ard": lambda: gp_ntk.NTKKernel(2, "erf", 1.5, 0.2, ard_num_dims=4),
    "ntk-gelu-per-layer": lambda: gp_ntk.NTKKernel(2, "gelu", [1.0, 2.0, 1.5], [0.1, 0.2, 0.3]),
    "ntk-arccos2": lambda: KERNELS["ntk-arccos2"](0.3),
    "ntk-tanh-quad": lambda: KERNELS["ntk-tanh-quad"](0.3),
    "arccos0-2layers": lambda: KERNELS["arccos0"](0.5),
    "erf-williams-ard": lambda: gp_ntk.ErfKernel([1.0, 2.0, 0.5, 1.5], 0.3, ard_num_dims=4),
    "ntk-batch": lambda: gp_ntk.NTKKernel(2, "relu", 2.0, 0.1, batch_shape=torch.Size([2])),
}
ONE_PIECE = gp_ntk.settings.block_evaluation(min_elements=10**12)


def _blocked(block_elements: int = 50):
    return gp_ntk.settings.block_evaluation(min_elements=0, block_elements=block_elements)


def _inputs(n: int, seed: int = 0, batch=(), singular: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*batch, n, 4, generator=g, dtype=DTYPE)
    if singular:
        x[..., 1, :] = x[..., 0, :]
        x[..., 2, :] = 3.0 * x[..., 0, :]
        x[..., 3, :] = -x[..., 0, :]
        x[..., 4, :] = 0.0
    return x


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("singular", [False, True])
def test_blocked_matrix_equals_one_piece(name, symmetric, singular):
    kernel = VARIANTS[name]().to(DTYPE)
    batch = (2,) if name == "ntk-batch" else ()
    x1 = _inputs(23, batch=batch, singular=singular)
    x2 = x1 if symmetric else _inputs(17, seed=1, batch=batch, singular=singular)
    with torch.no_grad():
        with ONE_PIECE:
            reference = kernel(x1, x2).to_dense()
        with _blocked():
            result = kernel(x1, x2).to_dense()
    # Entries between distinct (duplicate, parallel) rows that are evaluated as cross terms in
    # one layout and inside a symmetric square in the other may differ by the rounding of the
    # correlation, which a cusp (J_0) turns into sqrt(eps); everything else agrees to rounding.
    atol = 1e-7 * float(reference.abs().max()) if singular else 1e-12
    torch.testing.assert_close(result, reference, rtol=1e-12, atol=atol)
    if symmetric:
        assert torch.equal(result, result.mT), "k(X, X) from blocks must be exactly symmetric"
        torch.testing.assert_close(
            result.diagonal(dim1=-2, dim2=-1), kernel(x1, diag=True), rtol=1e-13, atol=0
        )


@pytest.mark.parametrize(
    "name", ["nngp-relu", "ntk-erf-ard", "ntk-gelu-per-layer", "arccos0-2layers", "ntk-batch"]
)
@pytest.mark.parametrize("symmetric", [True, False])
def test_blocked_gradients_equal_one_piece(name, symmetric):
    """<G, K> differentiated through the blockwise recomputing backward and through autograd."""
    kernel = VARIANTS[name]().to(DTYPE)
    batch = (2,) if name == "ntk-batch" else ()
    x1 = _inputs(21, batch=batch).requires_grad_(True)
    x2 = x1 if symmetric else _inputs(13, seed=2, batch=batch).requires_grad_(True)
    weights = torch.randn(*batch, 21, x2.shape[-2], dtype=DTYPE, generator=torch.Generator().manual_seed(9))
    targets = [x1, *([] if symmetric else [x2]), *kernel.parameters()]

    def grads(setting):
        with setting:
            loss = (kernel(x1, x2).to_dense() * weights).sum()
        return torch.autograd.grad(loss, targets)

    for got, expected in zip(grads(_blocked(40)), grads(ONE_PIECE)):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


class _CrossAndSymmetric(torch.nn.Module):
    def __init__(self, kernel):
        super().__init__()
        self.kernel = kernel

    def forward(self, a, b):
        return self.kernel.forward(a, b), self.kernel.forward(a, a)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ntk-relu-nobias", "ntk-erf-ard", "erf-williams-ard"])
def test_gradcheck_through_blocked_backward(name):
    module = _CrossAndSymmetric(VARIANTS[name]().to(DTYPE))
    names = [n for n, _ in module.named_parameters()]
    raw = [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    x1 = _inputs(9, seed=4).requires_grad_(True)
    x2 = _inputs(7, seed=5).requires_grad_(True)

    def fn(a, b, *values):
        with _blocked(10):
            return torch.func.functional_call(module, dict(zip(names, values)), (a, b))

    assert torch.autograd.gradcheck(fn, (x1, x2, *raw), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_nngp_and_ntk_blocked_equal_the_two_kernels():
    x = _inputs(31, singular=True)
    ntk_kernel = gp_ntk.NTKKernel(3, "relu", 2.0, 0.1).to(DTYPE)
    nngp_kernel = gp_ntk.NNGPKernel(3, "relu", 2.0, 0.1).to(DTYPE)
    with _blocked(64):
        nngp, ntk = ntk_kernel.nngp_and_ntk(x, x)
        # the same recursion, but blocks of other shapes may take other vector paths: to rounding
        torch.testing.assert_close(ntk, ntk_kernel(x).to_dense(), rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(nngp, nngp_kernel(x).to_dense(), rtol=1e-13, atol=1e-15)
        only_nngp, none = ntk_kernel.nngp_and_ntk(x, x[:7], compute_ntk=False)
    assert none is None
    torch.testing.assert_close(only_nngp, nngp[:, :7], rtol=1e-12, atol=1e-7)


def test_blocked_evaluation_is_differentiable_once():
    kernel = gp_ntk.NNGPKernel(2, "relu", 2.0, 0.1).to(DTYPE)
    x = _inputs(12).requires_grad_(True)
    with _blocked(30):
        matrix = kernel(x).to_dense()
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(matrix.sum(), x, create_graph=True)
    # below the threshold the kernel is differentiable any number of times
    with ONE_PIECE:
        (grad,) = torch.autograd.grad(kernel(x).to_dense().sum(), x, create_graph=True)
    assert torch.isfinite(torch.autograd.grad(grad.sum(), x)[0]).all()


@pytest.mark.parametrize("symmetric", [True, False])
def test_block_matmul_and_ranges(symmetric):
    kernel = gp_ntk.NTKKernel(2, "erf", 1.5, 0.2, batch_shape=torch.Size([3])).to(DTYPE)
    x1 = _inputs(37, batch=(3,))
    x2 = x1 if symmetric else _inputs(29, seed=3, batch=(3,))
    rhs = torch.randn(3, x2.shape[-2], 4, dtype=DTYPE)

    variances = kernel._variances()

    def f(side1, side2):
        return kernel._block(side1, side2, "kernel", variances)

    with torch.no_grad(), ONE_PIECE:
        dense = kernel(x1, x2).to_dense()
        side1 = kernel._side(x1, variances)
        side2 = side1 if symmetric else kernel._side(x2, variances)
        product = blocks.matmul(f, side1, side2, symmetric, rhs, block_elements=100)
        (assembled,) = blocks.dense(f, side1, side2, symmetric, block_elements=100)
    torch.testing.assert_close(product, dense @ rhs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(assembled, dense, rtol=1e-12, atol=1e-12)
    ranges = blocks.row_ranges(37, 37 if symmetric else 29, symmetric, 100)
    assert ranges[0][0] == 0 and ranges[-1][1] == 37
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


def test_exact_gp_loss_and_gradients_blocked_vs_one_piece():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 3, generator=g, dtype=DTYPE)
    y = torch.sin(x.sum(-1)) + 0.1 * torch.randn(120, generator=g, dtype=DTYPE)
    likelihood = gpytorch.likelihoods.GaussianLikelihood().to(DTYPE)

    class Model(gpytorch.models.ExactGP):
        def __init__(self):
            super().__init__(x, y, likelihood)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gp_ntk.NTKKernel(3, "relu", 2.0, 0.1))

        def forward(self, inputs):
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(inputs), self.covar_module(inputs)
            )

    model = Model().to(DTYPE)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    model.train()

    def loss_and_grads(setting):
        with setting:
            loss = -mll(model(x), y)
        return [loss.detach(), *torch.autograd.grad(loss, list(model.parameters()))]

    for got, expected in zip(loss_and_grads(_blocked(500)), loss_and_grads(ONE_PIECE)):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-11)


def test_float32_blocked_symmetric_matrix_at_the_singular_set():
    kernel = gp_ntk.NTKKernel(3, "relu", 2.0, 0.0)
    x = singular_inputs(torch.float32, zero_row=True).repeat(4, 1)
    with torch.no_grad():
        with ONE_PIECE:
            reference = kernel(x).to_dense()
        with _blocked(3 * x.shape[0]):
            result = kernel(x).to_dense()
    assert torch.equal(result, result.T) and torch.isfinite(result).all()
    torch.testing.assert_close(result.diagonal(), reference.diagonal(), rtol=1e-6, atol=0)
    torch.testing.assert_close(result, reference, rtol=1e-3, atol=1e-3 * float(reference.abs().max()))


def test_block_evaluation_setting_refuses_bad_values_and_restores():
    with pytest.raises(ValueError, match="min_elements"):
        gp_ntk.settings.block_evaluation(min_elements=-1)
    with pytest.raises(ValueError, match="block_elements"):
        gp_ntk.settings.block_evaluation(block_elements=0)
    before = gp_ntk.settings.block_evaluation._min_elements
    with gp_ntk.settings.block_evaluation(min_elements=7, block_elements=99):
        assert gp_ntk.settings.block_evaluation.applies(7)
        assert gp_ntk.settings.block_evaluation.block_elements_for(torch.device("cpu")) == 99
    assert gp_ntk.settings.block_evaluation._min_elements == before
    assert gp_ntk.settings.block_evaluation.block_elements_for(torch.device("cpu")) == 2**17
    assert gp_ntk.settings.block_evaluation.block_elements_for(torch.device("cuda")) == 2**24


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler")
def test_compiled_dense_blocks_match_eager_values_and_gradients():
    """The torch.compile path of dense row blocks (NNGP and NTK fused) against eager blocks."""
    kernel = gp_ntk.NTKKernel(2, "relu", 2.0, 0.1).to(DTYPE)
    x = _inputs(40, singular=True).requires_grad_(True)
    weights = torch.randn(2, 40, 40, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    params = list(kernel.parameters())
    results = {}
    for mode in ("never", "always"):
        with _blocked(400), gp_ntk.settings.compile_kernels(mode):
            nngp, ntk = kernel.nngp_and_ntk(x, x)
            loss = (weights[0] * nngp + weights[1] * ntk).sum()
            results[mode] = (nngp.detach(), ntk.detach(), *torch.autograd.grad(loss, [x, *params]))
    assert not gp_ntk.settings.compile_kernels._broken, "torch.compile fell back to eager"
    for compiled, eager in zip(results["always"], results["never"]):
        assert torch.isfinite(compiled).all()
        # duplicate rows sit on the arccos cusp, where rounding differences grow to sqrt(eps)
        torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-6 * float(eager.abs().max()))
    assert torch.equal(results["always"][1], results["always"][1].T)


def test_dense_compile_failure_falls_back_to_eager(monkeypatch):
    break_compiler(monkeypatch)
    kernel = gp_ntk.NTKKernel(2, "relu", 2.0, 0.1).to(DTYPE)
    x = _inputs(30)
    with _blocked(200), gp_ntk.settings.compile_kernels("always"):
        with pytest.warns(RuntimeWarning, match="torch.compile is unavailable"):
            result = kernel(x).to_dense()
    assert gp_ntk.settings.compile_kernels._broken
    with ONE_PIECE:
        torch.testing.assert_close(result, kernel(x).to_dense(), rtol=1e-12, atol=1e-12)
