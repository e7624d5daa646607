"""What every gp_ntk kernel owes a GPyTorch user: numerics, the kernel contract, refusals."""

from __future__ import annotations

import copy
import pickle

import gpytorch
import pytest
import torch
from _helpers import KERNELS, kernel_function, singular_inputs
from torch.autograd.gradcheck import GradcheckError

import gp_ntk

NAMES = list(KERNELS)


# --------------------------------------------------------------------------- singular set


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [0.0, 0.3])
def test_values_and_gradients_finite_at_singular_set(name, dtype, bias):
    kernel = KERNELS[name](bias).to(dtype)
    x = singular_inputs(dtype).requires_grad_(True)
    full = kernel(x).to_dense()
    diag = kernel(x, diag=True)
    assert torch.isfinite(full).all() and torch.isfinite(diag).all()
    weights = torch.linspace(0.5, 1.5, full.numel(), dtype=dtype).view_as(full)
    loss = (full * weights).sum() + diag.sum()
    grads = torch.autograd.grad(loss, [x, *kernel.parameters()])
    for g in grads:
        assert torch.isfinite(g).all()
    # exact symmetry and the diagonal from diag=True
    torch.testing.assert_close(full, full.transpose(-1, -2), rtol=0, atol=0)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(full.diagonal(), diag, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bias", [0.0, 0.3])
def test_float32_agrees_with_float64_at_singular_set(name, bias):
    k64 = KERNELS[name](bias).double()
    k32 = KERNELS[name](bias).float()
    x = singular_inputs(torch.float64)
    full64 = k64(x).to_dense()
    full32 = k32(x.float()).to_dense().double()
    scale = full64.abs().max()
    assert float((full32 - full64).abs().max() / scale) < 1e-5


# Step composed with itself is only Hoelder-1/2 at duplicates (its one-sided slopes are
# infinite), so it is checked against differences away from the singular set only.
HOELDER_HALF = {"ntk-step", "arccos0"}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bias", [0.0, 0.3])
def test_gradcheck_inputs_and_hyperparameters_at_singular_set(name, bias):
    # Central differences across the duplicate, parallel and anti-parallel rows: for kernels
    # with a cusp there (relu NTK, step, abs) they see the symmetric subgradient the kernel
    # returns. eps = 1e-4 because arccos turns the 1e-16 rounding of cos(theta) near 1 into
    # 1e-8 in the angle, which smaller steps would divide by. The zero row is only in the
    # finiteness test: bias-free kernels have a direction-dependent cone at 0.
    kernel = KERNELS[name](bias).double()
    x = singular_inputs(torch.float64, zero_row=False)
    if name in HOELDER_HALF:
        x = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    fn, params = kernel_function(kernel)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-4, atol=1e-5, rtol=1e-4)


def test_gradcheck_catches_a_wrong_gradient():
    # the tolerance above rejects a 10 % error: break J_n's derivative and see it fail
    from gp_ntk.ops import angular, relu_family

    # (order 3: orders 1 and 2 take the fused recursion, which has its own backward pass)
    kernel = gp_ntk.ArcCosineKernel(3, 1, 1.0, 0.3).double()
    x = singular_inputs(torch.float64, zero_row=False).requires_grad_(True)
    fn, params = kernel_function(kernel)
    originals = {cls: cls.backward for cls in (angular._ArcCosJ, angular._ArcCosJPair)}

    def break_(original):
        def wrong(ctx, *grad_outputs):
            grad, none = original(ctx, *grad_outputs)
            return 1.1 * grad, none

        return staticmethod(wrong)

    for cls, original in originals.items():
        cls.backward = break_(original)
    try:
        with pytest.raises(GradcheckError):
            torch.autograd.gradcheck(fn, (x, *params), eps=1e-4, atol=1e-5, rtol=1e-4)
    finally:
        for cls, original in originals.items():
            cls.backward = staticmethod(original)
    # the ReLU family's fused recursion has its own backward pass: break that one too
    fn, params = kernel_function(KERNELS["ntk-relu"](0.3).double())
    fused = relu_family._ReLUFamilyBlock._backward

    def wrong_fused(ctx, *grad_outputs):
        return tuple(None if g is None else 1.1 * g for g in fused(ctx, *grad_outputs))

    relu_family._ReLUFamilyBlock._backward = staticmethod(wrong_fused)
    try:
        with pytest.raises(GradcheckError):
            torch.autograd.gradcheck(fn, (x, *params), eps=1e-4, atol=1e-5, rtol=1e-4)
    finally:
        relu_family._ReLUFamilyBlock._backward = staticmethod(fused)


@pytest.mark.parametrize("name", ["nngp-relu", "ntk-relu", "arccos1", "ntk-abs"])
def test_zero_norm_rows_without_bias_have_documented_limit(name):
    kernel = KERNELS[name](0.0).double()
    x = singular_inputs(torch.float64).requires_grad_(True)
    full = kernel(x).to_dense()
    # a zero input gives a zero first-layer pre-activation, and these activations map 0 to 0
    assert full[-1].abs().max() == 0 and full[:, -1].abs().max() == 0
    (g,) = torch.autograd.grad(full.sum(), x)
    assert torch.isfinite(g).all()
    if not name.startswith("ntk"):
        # the masked norm gives the zero subgradient; the NTK's x^T y / d term keeps a
        # (finite) gradient taken at the direction-averaged correlation 0
        assert g[-1].abs().max() == 0


def test_zero_norm_rows_step_kernel_limit():
    kernel = gp_ntk.ArcCosineKernel(order=0, bias_variance=0.0).double()
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    k = kernel(x).to_dense()
    # against a non-zero input: angle taken as pi/2; two zero inputs are the same point
    # 1/2 goes through an arccos (rounded differently by different vector units); the two
    # zero inputs are the same point by construction, exactly
    assert float(k[0, 1]) == pytest.approx(0.5, rel=4 * torch.finfo(k.dtype).eps, abs=0)
    assert k[0, 2] == 1.0 and k[0, 0] == 1.0


# --------------------------------------------------------------------------- deep and PSD


@pytest.mark.parametrize(
    "activation,weight_variance", [("relu", 2.0), ("erf", 2.0), ("gelu", 2.0), ("abs", 1.0), ("sin", 1.5)]
)
@pytest.mark.parametrize("depth", [10, 50])
@pytest.mark.parametrize("cls", [gp_ntk.NNGPKernel, gp_ntk.NTKKernel])
def test_deep_float32_stays_finite(cls, depth, activation, weight_variance):
    kernel = cls(depth, activation, weight_variance, 0.1)
    x = torch.randn(30, 5)
    x[1] = x[0]
    x.requires_grad_(True)
    full = kernel(x).to_dense()
    assert torch.isfinite(full).all()
    grads = torch.autograd.grad(full.sum(), [x, *kernel.parameters()])
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_psd_symmetric_and_diag(name, dtype, tol):
    kernel = KERNELS[name](0.2).to(dtype)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(60, 6, generator=g).to(dtype)
    full = kernel(x).to_dense()
    evals = torch.linalg.eigvalsh(full.double())
    assert float(evals.min()) >= -tol * float(evals.max())
    torch.testing.assert_close(full, full.transpose(-1, -2), rtol=0, atol=0)
    torch.testing.assert_close(kernel(x, diag=True), full.diagonal(), rtol=tol, atol=tol)
    # cross-covariance blocks agree with the joint matrix
    torch.testing.assert_close(
        kernel(x[:20], x[20:]).to_dense(), full[:20, 20:], rtol=10 * tol, atol=10 * tol
    )


def test_diag_is_linear_in_n():
    # diag=True must not build the n x n matrix: 200 000 rows would need 320 GB dense.
    kernel = gp_ntk.NTKKernel(3, "relu", 2.0, 0.1)
    x = torch.randn(200_000, 4)
    diag = kernel(x, diag=True)
    assert diag.shape == (200_000,) and torch.isfinite(diag).all()


# --------------------------------------------------------------------------- GPyTorch contract


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_and_pickle_round_trip(name):
    kernel = KERNELS[name](0.2)
    with torch.no_grad():
        for p in kernel.parameters():
            p.add_(0.37)
    x = torch.randn(7, 3)
    expected = kernel(x).to_dense()
    fresh = KERNELS[name](0.2)
    fresh.load_state_dict(kernel.state_dict())
    torch.testing.assert_close(fresh(x).to_dense(), expected)
    clone = pickle.loads(pickle.dumps(kernel))
    torch.testing.assert_close(clone(x).to_dense(), expected)


def test_dtype_follows_inputs_and_no_grad():
    kernel = gp_ntk.NTKKernel(2, "relu")  # float32 parameters
    x = torch.randn(5, 3, dtype=torch.float64)
    with torch.no_grad():
        full = kernel(x).to_dense()
    assert full.dtype == torch.float64 and not full.requires_grad
    assert kernel(x.float()).to_dense().dtype == torch.float32


def test_batched_botorch_shapes_and_batch_kernels():
    kernel = gpytorch.kernels.ScaleKernel(gp_ntk.NTKKernel(2, "relu", ard_num_dims=3))
    train = torch.randn(10, 3)
    candidates = torch.randn(4, 2, 3)  # t x q x d
    cross = kernel(candidates, train).to_dense()
    assert cross.shape == (4, 2, 10)
    torch.testing.assert_close(cross[1], kernel(candidates[1], train).to_dense())
    batched = gp_ntk.NNGPKernel(2, "erf", batch_shape=torch.Size([3]))
    assert batched.weight_variance.shape == (3, 1)
    assert batched(torch.randn(3, 6, 2)).to_dense().shape == (3, 6, 6)


def test_active_dims_and_scale_kernel():
    x = torch.randn(8, 5)
    kernel = gp_ntk.NNGPKernel(2, "relu", active_dims=[0, 3])
    torch.testing.assert_close(kernel(x).to_dense(), gp_ntk.NNGPKernel(2, "relu")(x[:, [0, 3]]).to_dense())
    scaled = gpytorch.kernels.ScaleKernel(gp_ntk.NNGPKernel(2, "relu"))
    scaled.outputscale = 3.0
    torch.testing.assert_close(scaled(x).to_dense(), 3.0 * scaled.base_kernel(x).to_dense())


class _ExactGP(gpytorch.models.ExactGP):
    def __init__(self, x, y, kernel):
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(kernel)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


@pytest.mark.parametrize("cls", [gp_ntk.NNGPKernel, gp_ntk.NTKKernel])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_gp_trains_and_predicts(cls, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3, generator=g).to(dtype)
    y = torch.sin(2 * x[:, 0]) + 0.5 * x[:, 1] + 0.05 * torch.randn(60, generator=g).to(dtype)
    model = _ExactGP(x, y, cls(3, "relu", 2.0, 0.1, ard_num_dims=3)).to(dtype)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = -mll(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    model.eval()
    with torch.no_grad(), gpytorch.settings.fast_pred_var():
        pred = model.likelihood(model(torch.randn(5, 3).to(dtype)))
    assert torch.isfinite(pred.mean).all() and (pred.variance > 0).all()


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: gp_ntk.NNGPKernel(depth=0), "depth must be an integer >= 1"),
        (lambda: gp_ntk.NTKKernel(depth=2.5), "depth must be an integer >= 1"),
        (lambda: gp_ntk.NNGPKernel(activation="swish"), "unknown activation 'swish'"),
        (lambda: gp_ntk.NNGPKernel(weight_variance=0.0), "weight_variance must be positive"),
        (lambda: gp_ntk.NTKKernel(weight_variance=-1.0), "weight_variance must be positive"),
        (lambda: gp_ntk.NNGPKernel(bias_variance=-0.1), "bias_variance must be non-negative"),
        (lambda: gp_ntk.NNGPKernel(weight_variance=float("nan")), "weight_variance must be finite"),
        (lambda: gp_ntk.NNGPKernel(parameterization="mup"), "parameterization must be one of"),
        (
            lambda: gp_ntk.NNGPKernel(depth=2, weight_variance=[1.0, 2.0]),
            r"weight_variance: got 2 values; pass one number or depth \+ 1 = 3",
        ),
        (lambda: gp_ntk.NNGPKernel(bias_variance=[0.1, 0.0, 0.2]), "all positive or 0"),
        (lambda: gp_ntk.ArcCosineKernel(order=-1), "order must be a non-negative integer"),
        (lambda: gp_ntk.ArcCosineKernel(order=1.5), "order must be a non-negative integer"),
        (lambda: gp_ntk.ArcCosineKernel(num_layers=0), "num_layers must be an integer >= 1"),
        (lambda: gp_ntk.ErfKernel(weight_variance=0.0), "weight_variance must be positive"),
        (lambda: gp_ntk.ErfKernel(ard_num_dims=0), "ard_num_dims must be a positive integer"),
    ],
)
def test_bad_construction_is_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("name", ["ntk-relu", "arccos1", "erf-williams"])
def test_bad_inputs_are_refused_and_parameters_unchanged(name):
    kernel = KERNELS[name](0.2, ard_num_dims=3)
    before = copy.deepcopy(kernel.state_dict())
    x = torch.randn(5, 3)
    cases = [
        ((x, torch.randn(4, 2)), "same number of features"),
        ((torch.randn(5), None), "at least 2 dimensions"),
        ((x, x.double()), "same dtype"),
        ((torch.randint(0, 3, (5, 3)), None), "floating-point"),
        ((torch.randn(5, 4), None), "ard_num_dims=3"),
    ]
    for (x1, x2), match in cases:
        with pytest.raises(ValueError, match=match):
            kernel(x1, x2).to_dense()
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="x1 contains NaN or infinite values in 1 row"):
        kernel(bad).to_dense()
    with pytest.raises(ValueError, match="x2 contains NaN"):
        kernel(x, bad.clone().fill_(float("inf"))).to_dense()
    # the same refusals reach the kernel through a ScaleKernel
    with pytest.raises(ValueError, match="NaN"):
        gpytorch.kernels.ScaleKernel(kernel)(bad).to_dense()
    for key, value in kernel.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_non_finite_propagation_when_check_is_off():
    kernel = gp_ntk.NTKKernel(2, "relu")
    x = torch.randn(6, 3)
    x[2, 0] = float("nan")
    with gp_ntk.settings.check_finite(False):
        full = kernel(x).to_dense()
    assert gp_ntk.settings.check_finite.on()
    bad = ~torch.isfinite(full)
    assert bad[2].all() and bad[:, 2].all()
    assert bad.sum() == 2 * 6 - 1  # only row and column 2


def test_setters_refuse_non_positive_and_keep_values():
    kernel = gp_ntk.NNGPKernel(2, "relu", 2.0, 0.1)
    for attr in ("weight_variance", "bias_variance"):
        before = getattr(kernel, attr).clone()
        with pytest.raises(ValueError, match=f"{attr} must be positive"):
            setattr(kernel, attr, -1.0)
        torch.testing.assert_close(getattr(kernel, attr), before)
    kernel.weight_variance = 3.0
    assert float(kernel.weight_variance) == pytest.approx(3.0)
    no_bias = gp_ntk.NNGPKernel(2, "relu", 2.0, 0.0)
    assert no_bias.bias_variance is None and "raw_bias_variance" not in dict(no_bias.named_parameters())
    with pytest.raises(ValueError, match="no biases"):
        no_bias.bias_variance = 1.0


def test_priors_register_and_contribute():
    prior = gpytorch.priors.GammaPrior(2.0, 1.0)
    kernel = gp_ntk.NTKKernel(2, "relu", 2.0, 0.1, weight_variance_prior=prior, bias_variance_prior=prior)
    names = {name for name, *_ in kernel.named_priors()}
    assert names == {"weight_variance_prior", "bias_variance_prior"}
    with pytest.raises(ValueError, match="bias_variance_prior needs biases"):
        gp_ntk.NTKKernel(2, "relu", 2.0, 0.0, bias_variance_prior=prior)


@pytest.mark.parametrize("cls", [gp_ntk.NNGPKernel, gp_ntk.NTKKernel])
def test_overflow_far_from_the_usual_range_is_reported(cls):
    # relu variances grow like (weight_variance / 2)**depth: 8**50 = 1e45 > float32's 3e38
    kernel = cls(50, "relu", 16.0, 0.1)
    x = torch.randn(10, 3)
    with pytest.raises(FloatingPointError, match="overflowed in torch.float32.*depth=50"):
        kernel(x).to_dense()
    with gp_ntk.settings.check_finite(False):
        assert not torch.isfinite(kernel(x).to_dense()).all()
    # float64 holds it, and agrees with float32 where float32 still fits: products of two
    # variances must stay below 3e38, and w = 4 gives 2**50 = 1e15
    assert torch.isfinite(cls(50, "relu", 16.0, 0.1).double()(x.double()).to_dense()).all()
    k32 = cls(50, "relu", 4.0, 0.1)(x).to_dense().double()
    k64 = cls(50, "relu", 4.0, 0.1).double()(x.double()).to_dense()
    assert float(((k32 - k64).abs() / k64.abs()).max()) < 1e-3


def test_exact_gp_cholesky_and_cg_paths_agree():
    # plain GPyTorch switches to CG/Lanczos above max_cholesky_size (800); `import botorch`
    # raises it to 4096. The kernel must serve both paths: same loss, finite gradients.
    g = torch.Generator().manual_seed(4)
    x = torch.randn(400, 3, generator=g, dtype=torch.float64)
    y = torch.sin(x[:, 0]) + 0.1 * torch.randn(400, generator=g, dtype=torch.float64)
    model = _ExactGP(x, y, gp_ntk.NTKKernel(3, "relu", 2.0, 0.1)).double()
    model.likelihood.noise = 0.05
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    losses = {}
    for name, size in (("cholesky", 4096), ("cg", 100)):
        torch.manual_seed(0)  # the stochastic log-determinant probes
        with gpytorch.settings.max_cholesky_size(size), gpytorch.settings.num_trace_samples(64):
            loss = -mll(model(x), y)
            grads = torch.autograd.grad(loss, list(model.parameters()))
        assert all(torch.isfinite(gr).all() for gr in grads)
        losses[name] = float(loss)
    # measured: 0.1 % apart (stochastic Lanczos log-determinant with 64 probes)
    assert losses["cg"] == pytest.approx(losses["cholesky"], rel=2e-2)


def test_float_assignment_keeps_float64_precision():
    kernel = gp_ntk.NNGPKernel(2, "relu").double()
    kernel.weight_variance = 0.7
    kernel.bias_variance = 0.3
    assert float(kernel.weight_variance) == pytest.approx(0.7, rel=1e-14)
    assert float(kernel.bias_variance) == pytest.approx(0.3, rel=1e-14)


@pytest.mark.parametrize("name", ["ntk-relu", "ntk-step", "arccos0", "ntk-abs"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cross_evaluated_equal_points_match_the_diagonal(name, dtype):
    # one feature: the cross covariance of a point with its copy is bitwise its variance, and the
    # correlation must come out at exactly 1 (an ulp below would be an angle of sqrt(2 ulp) at
    # the cusp of J_0: 2e-8 relative in float64, 5e-4 in float32)
    kernel = KERNELS[name](0.0).to(dtype)
    x = torch.randn(40, 1, generator=torch.Generator().manual_seed(8)).to(dtype)
    cross = kernel(x, x.clone()).to_dense().diagonal()
    torch.testing.assert_close(cross, kernel(x, diag=True), rtol=4 * torch.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_matrix_and_variances_is_the_matrix_and_both_diagonals(name):
    kernel = KERNELS[name](0.2).to(torch.float64)
    generator = torch.Generator().manual_seed(9)
    x1 = torch.randn(2, 7, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(5, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    matrix, variance1, variance2 = kernel.matrix_and_variances(x1, x2)
    tol = {"rtol": 1e-12, "atol": 1e-14}
    torch.testing.assert_close(matrix, kernel(x1, x2).to_dense(), **tol)
    torch.testing.assert_close(variance1, kernel(x1, diag=True), **tol)
    torch.testing.assert_close(variance2, kernel(x2, diag=True), **tol)
    # gradients as from the three calls
    weights = torch.linspace(0.5, 1.5, matrix.numel(), dtype=torch.float64).view_as(matrix)
    one_pass = (matrix * weights).sum() + variance1.sum() + 2 * variance2.sum()
    three = (kernel(x1, x2).to_dense() * weights).sum() + kernel(x1, diag=True).sum()
    three = three + 2 * kernel(x2, diag=True).sum()
    inputs = [x1, x2, *kernel.parameters()]
    for got, want in zip(torch.autograd.grad(one_pass, inputs), torch.autograd.grad(three, inputs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # the same tensor twice: one diagonal, the symmetric matrix
    matrix, variance1, variance2 = kernel.matrix_and_variances(x2, x2)
    assert variance1 is variance2
    torch.testing.assert_close(matrix, matrix.T, rtol=0, atol=0)


def test_matrix_and_variances_declines_where_the_kernel_call_differs():
    x1, x2 = torch.randn(6, 3), torch.randn(4, 3)
    assert gp_ntk.NTKKernel(2, active_dims=[0, 1]).matrix_and_variances(x1, x2) is None
    kernel = gp_ntk.NTKKernel(2)
    with gp_ntk.settings.lazy_evaluation("always"):
        assert kernel.matrix_and_variances(x1, x2) is None
    with gp_ntk.settings.block_evaluation(min_elements=0):
        assert kernel.matrix_and_variances(x1, x2) is None
    assert kernel.matrix_and_variances(x1, x2) is not None
    with pytest.raises(ValueError, match="x2"):
        kernel.matrix_and_variances(x1, torch.randn(4, 5))


@pytest.mark.parametrize("batch_shape", [torch.Size([]), torch.Size([3]), torch.Size([2, 1])])
def test_batch_shape_is_gpytorchs_without_its_submodule_walk(batch_shape):
    from gpytorch.kernels import Kernel

    for kernel in (
        gp_ntk.NTKKernel(2, "relu", batch_shape=batch_shape, ard_num_dims=3),
        gp_ntk.NNGPKernel(3, "erf", batch_shape=batch_shape),
        gp_ntk.ArcCosineKernel(1, batch_shape=batch_shape),
    ):
        # no gp_ntk network kernel holds sub-kernels: its own batch shape is GPyTorch's answer
        assert list(kernel.sub_kernels()) == []
        assert kernel.batch_shape == Kernel.batch_shape.fget(kernel) == batch_shape
        kernel.batch_shape = torch.Size([5, *batch_shape])
        assert kernel.batch_shape == Kernel.batch_shape.fget(kernel) == torch.Size([5, *batch_shape])
