"""Kernels between values and gradients: agreement with autograd of the value kernels, layout,
homogeneity identities, smoothness limits."""

from __future__ import annotations

import gpytorch
import pytest
import torch

import gp_ntk
from gp_ntk.kernels.grad import gradient_kernel_by_autograd

DTYPE = torch.float64
SMOOTH = ["erf", "gelu", "sin", "cos", "identity"]
RECTIFIED = ["relu", "leaky_relu", "abs", gp_ntk.ArcCos(2), gp_ntk.ArcCos(3)]


def _inputs(n=4, m=3, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=DTYPE), torch.randn(m, d, generator=g, dtype=DTYPE)


def _pair(grad_cls, value_cls, **kwargs):
    return grad_cls(**kwargs).to(DTYPE), value_cls(**kwargs).to(DTYPE)


def _relative_error(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("activation", SMOOTH + RECTIFIED, ids=str)
@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("bias", [0.0, 0.2])
def test_nngp_matches_autograd(activation, depth, bias):
    x1, x2 = _inputs()
    weights = [1.5, 0.7, 1.3, 0.9][: depth + 1]
    k, kv = _pair(
        gp_ntk.NNGPKernelGrad,
        gp_ntk.NNGPKernel,
        depth=depth,
        activation=activation,
        weight_variance=weights,
        bias_variance=bias,
    )
    with torch.no_grad():
        K = k(x1, x2).to_dense()
    assert _relative_error(K, gradient_kernel_by_autograd(kv, x1, x2)) < 1e-8


@pytest.mark.parametrize("activation", SMOOTH + [gp_ntk.ArcCos(2), gp_ntk.ArcCos(3)], ids=str)
@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("bias", [0.0, 0.2])
def test_ntk_matches_autograd(activation, depth, bias):
    x1, x2 = _inputs(seed=1)
    k, kv = _pair(
        gp_ntk.NTKKernelGrad,
        gp_ntk.NTKKernel,
        depth=depth,
        activation=activation,
        weight_variance=1.2,
        bias_variance=[bias] * (depth + 1) if bias else 0.0,
    )
    with torch.no_grad():
        K = k(x1, x2).to_dense()
    assert _relative_error(K, gradient_kernel_by_autograd(kv, x1, x2)) < 1e-8


def test_functional_hessian_of_one_pair():
    """The mixed block of one pair against torch.autograd.functional.hessian of k(x, y)."""
    x1, x2 = _inputs(1, 1, 4)
    k, kv = _pair(gp_ntk.NTKKernelGrad, gp_ntk.NTKKernel, depth=2, activation="gelu", bias_variance=0.1)

    def value(z):
        return kv(z[:4].unsqueeze(0), z[4:].unsqueeze(0), diag=True).sum()

    z = torch.cat([x1[0], x2[0]])
    hessian = torch.autograd.functional.hessian(value, z)
    jacobian = torch.autograd.functional.jacobian(value, z)
    K = k(x1, x2).to_dense().detach()
    assert torch.allclose(K[1:, 1:], hessian[:4, 4:], rtol=1e-9, atol=1e-12)
    assert torch.allclose(K[1:, 0], jacobian[:4], rtol=1e-9, atol=1e-12)
    assert torch.allclose(K[0, 1:], jacobian[4:], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "grad_cls, value_cls, kwargs",
    [
        (gp_ntk.ErfKernelGrad, gp_ntk.ErfKernel, dict(weight_variance=0.8, bias_variance=0.5)),
        (gp_ntk.ErfKernelGrad, gp_ntk.ErfKernel, dict(weight_variance=[0.5, 1.0, 2.0], ard_num_dims=3)),
        (gp_ntk.ArcCosineKernelGrad, gp_ntk.ArcCosineKernel, dict(order=1, num_layers=3, bias_variance=0.3)),
        (gp_ntk.ArcCosineKernelGrad, gp_ntk.ArcCosineKernel, dict(order=2, num_layers=2, bias_variance=0.0)),
        (gp_ntk.NNGPKernelGrad, gp_ntk.NNGPKernel, dict(depth=2, activation="relu", ard_num_dims=3)),
        (
            gp_ntk.NTKKernelGrad,
            gp_ntk.NTKKernel,
            dict(depth=2, activation="sin", ard_num_dims=3, per_layer=True),
        ),
    ],
)
def test_other_kernels_and_ard_match_autograd(grad_cls, value_cls, kwargs):
    x1, x2 = _inputs(seed=2)
    k, kv = _pair(grad_cls, value_cls, **kwargs)
    if "ard_num_dims" in kwargs:
        w = torch.tensor([0.5, 1.0, 2.0], dtype=DTYPE)
        k.input_weight_variance = w
        kv.input_weight_variance = w
    with torch.no_grad():
        K = k(x1, x2).to_dense()
    assert _relative_error(K, gradient_kernel_by_autograd(kv, x1, x2)) < 1e-8


def test_layout_matches_rbf_kernel_grad():
    """The same interleaving as GPyTorch's RBFKernelGrad: identity NNGP is linear, so
    its blocks are known: k = b + (w/d) x^T y, dk/dy = (w/d) x, d2k/dxdy = (w/d) I."""
    x1, x2 = _inputs(2, 3, 2)
    k = gp_ntk.NNGPKernelGrad(depth=1, activation="identity", weight_variance=1.0, bias_variance=0.0).to(
        DTYPE
    )
    K = k(x1, x2).to_dense().detach()
    # identity layer then readout: k = w * (w/d) x^T y with w = 1, d = 2
    expected = torch.zeros(2, 3, 3, 3, dtype=DTYPE)
    expected[:, 0, :, 0] = x1 @ x2.T / 2
    expected[:, 0, :, 1:] = x1.unsqueeze(1).expand(2, 3, 2) / 2
    expected[:, 1:, :, 0] = x2.T.unsqueeze(0).expand(2, 2, 3) / 2
    expected[:, 1:, :, 1:] = torch.eye(2, dtype=DTYPE).view(1, 2, 1, 2) / 2
    assert torch.allclose(K, expected.reshape(6, 9))
    # the RBF kernel's shuffle: block-major index (alpha * n + i) -> i * (d + 1) + alpha
    rbf = gpytorch.kernels.RBFKernelGrad().to(DTYPE)
    R = rbf(x1, x2).to_dense().detach()
    r = rbf.lengthscale.detach()
    value = R[0, 0]
    assert torch.allclose(R[0, 1:3], value * (x1[0] - x2[0]) / r.squeeze() ** 2)
    assert k.num_outputs_per_input(x1, x2) == rbf.num_outputs_per_input(x1, x2) == 3


def test_symmetric_psd_diag_and_batch():
    x, _ = _inputs(6, 1, 3, seed=3)
    k = gp_ntk.NNGPKernelGrad(depth=2, activation="relu", bias_variance=0.1).to(DTYPE)
    K = k(x).to_dense().detach()
    assert torch.equal(K, K.T)
    assert float(torch.linalg.eigvalsh(K).min()) > -1e-10 * float(K.diagonal().max())
    assert torch.allclose(k(x, diag=True).detach(), K.diagonal(), rtol=1e-10, atol=1e-12)
    kb = gp_ntk.NTKKernelGrad(depth=2, activation="erf", batch_shape=torch.Size([2])).to(DTYPE)
    kb.weight_variance = torch.tensor([[1.0], [2.0]], dtype=DTYPE)
    xb = torch.randn(2, 5, 3, dtype=DTYPE)
    Kb = kb(xb).to_dense().detach()
    assert Kb.shape == (2, 20, 20)
    for i, w in enumerate([1.0, 2.0]):
        single = gp_ntk.NTKKernelGrad(depth=2, activation="erf").to(DTYPE)
        single.weight_variance = w  # set in float64, as the batch's were
        assert torch.allclose(Kb[i], single(xb[i]).to_dense().detach(), rtol=1e-12)
    assert torch.allclose(kb(xb, diag=True).detach(), Kb.diagonal(dim1=-2, dim2=-1), rtol=1e-10)


def test_hyperparameter_gradients_flow():
    x, _ = _inputs(4, 1, 2)
    for k in (
        gp_ntk.NTKKernelGrad(depth=2, activation="gelu", bias_variance=0.3),
        gp_ntk.NNGPKernelGrad(depth=2, activation="relu", bias_variance=0.3),
    ):
        k = k.to(DTYPE)
        k(x).to_dense().sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in k.parameters())


# ------------------------------------------------------------------- smoothness limits


def test_relu_nngp_mixed_derivative_is_continuous_at_duplicates():
    """The ReLU NNGP's cusp is cubic in the angle: the mixed block at x = y is finite and is
    the limit of nearby pairs (the singular j'' term vanishes there)."""
    x, _ = _inputs(1, 1, 3, seed=4)
    k = gp_ntk.NNGPKernelGrad(depth=3, activation="relu", bias_variance=0.0).to(DTYPE)
    at = k(x, x.clone()).to_dense().detach()
    assert torch.isfinite(at).all()
    direction = torch.randn(1, 3, dtype=DTYPE)
    for eps, tol in [(1e-3, 1e-2), (1e-5, 1e-4)]:
        near = k(x, x + eps * direction).to_dense().detach()
        assert _relative_error(near, at) < tol
    # and the symmetric k(X, X) path agrees with the cross evaluation at equal points
    assert torch.allclose(k(x).to_dense().detach(), at, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "abs", gp_ntk.ArcCos(1)], ids=str)
def test_relu_ntk_is_refused(activation):
    with pytest.raises(ValueError, match="cusp"):
        gp_ntk.NTKKernelGrad(depth=2, activation=activation)


def test_refusals():
    with pytest.raises(ValueError, match="cusp"):
        gp_ntk.NNGPKernelGrad(depth=2, activation="step")
    with pytest.raises(ValueError, match="closed-form"):
        gp_ntk.NNGPKernelGrad(depth=2, activation=gp_ntk.Numerical(torch.tanh))
    with pytest.raises(ValueError, match="cusp"):
        gp_ntk.ArcCosineKernelGrad(order=0)
    with pytest.raises(ValueError, match="parameterization"):
        gp_ntk.NTKKernelGrad(depth=2, activation="erf", parameterization="standard", width=10)
    k = gp_ntk.NNGPKernelGrad(depth=2, activation="relu", bias_variance=0.0)
    with pytest.raises(ValueError, match="zero row"):
        k(torch.zeros(2, 3)).to_dense()
    with pytest.raises(ValueError, match="last_dim_is_batch"):
        k(torch.randn(2, 3), last_dim_is_batch=True).to_dense()


# ------------------------------------------------------------------- homogeneity identities


def _x_hessian(kv, x, y):
    """Hessian of k(x, y) in x by autograd of the value kernel."""
    return torch.autograd.functional.hessian(lambda z: kv(z.unsqueeze(0), y.unsqueeze(0), diag=True).sum(), x)


@pytest.mark.parametrize(
    "grad_cls, value_cls, kwargs, degree",
    [
        (gp_ntk.NNGPKernelGrad, gp_ntk.NNGPKernel, dict(depth=1, activation="relu"), 1),
        (gp_ntk.NNGPKernelGrad, gp_ntk.NNGPKernel, dict(depth=4, activation="relu"), 1),
        (gp_ntk.NNGPKernelGrad, gp_ntk.NNGPKernel, dict(depth=3, activation="leaky_relu"), 1),
        (gp_ntk.NNGPKernelGrad, gp_ntk.NNGPKernel, dict(depth=2, activation=gp_ntk.ArcCos(2)), 4),
        (gp_ntk.NTKKernelGrad, gp_ntk.NTKKernel, dict(depth=2, activation=gp_ntk.ArcCos(2)), 4),
        (gp_ntk.NTKKernelGrad, gp_ntk.NTKKernel, dict(depth=3, activation="identity"), 1),
        (gp_ntk.ArcCosineKernelGrad, gp_ntk.ArcCosineKernel, dict(order=3, num_layers=1), 3),
        (gp_ntk.ArcCosineKernelGrad, gp_ntk.ArcCosineKernel, dict(order=2, num_layers=2), 4),
    ],
)
def test_homogeneity_identities(grad_cls, value_cls, kwargs, degree):
    """Bias-free layers of degree r compose to degree R = r**L in each argument:
    x.grad_x k = R k, sum x_i y_j d2k/dx_i dy_j = R**2 k, x^T H_x x = R (R - 1) k."""
    x1, x2 = _inputs(3, 2, 3, seed=5)
    k, kv = _pair(grad_cls, value_cls, bias_variance=0.0, **kwargs)
    K = k(x1, x2).to_dense().detach().reshape(3, 4, 2, 4)
    value = K[:, 0, :, 0]
    euler_x = torch.einsum("ni,nim->nm", x1, K[:, 1:, :, 0])
    euler_y = torch.einsum("mj,nmj->nm", x2, K[:, 0, :, 1:])
    mixed = torch.einsum("ni,mj,nimj->nm", x1, x2, K[:, 1:, :, 1:])
    scale = value.abs().max()
    assert float((euler_x - degree * value).abs().max() / scale) < 1e-10
    assert float((euler_y - degree * value).abs().max() / scale) < 1e-10
    assert float((mixed - degree**2 * value).abs().max() / scale) < 1e-10
    for i in range(3):
        h = _x_hessian(kv, x1[i], x2[0])
        assert abs(float(x1[i] @ h @ x1[i] - degree * (degree - 1) * value[i, 0])) < 1e-9 * float(scale)


# ------------------------------------------------------------------- GPyTorch drop-in


class _GradientGP(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood, covar):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMeanGrad()
        self.covar_module = gpytorch.kernels.ScaleKernel(covar)

    def forward(self, x):
        return gpytorch.distributions.MultitaskMultivariateNormal(self.mean_module(x), self.covar_module(x))


@pytest.mark.slow
def test_derivative_gp_drop_in():
    """GPyTorch's derivative-GP recipe with the network kernel in place of RBFKernelGrad."""
    torch.manual_seed(0)
    x = torch.rand(12, 2, dtype=DTYPE) * 2 - 1
    f = torch.sin(2 * x[:, 0]) * torch.cos(x[:, 1])
    grad = torch.stack(
        [2 * torch.cos(2 * x[:, 0]) * torch.cos(x[:, 1]), -torch.sin(2 * x[:, 0]) * torch.sin(x[:, 1])], -1
    )
    y = torch.cat([f.unsqueeze(-1), grad], -1)
    likelihood = gpytorch.likelihoods.MultitaskGaussianLikelihood(num_tasks=3).to(DTYPE)
    model = _GradientGP(
        x, y, likelihood, gp_ntk.NNGPKernelGrad(depth=2, activation="erf", bias_variance=0.5)
    ).to(DTYPE)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = -mll(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    model.eval()
    xt = torch.rand(7, 2, dtype=DTYPE) * 2 - 1
    with torch.no_grad():
        pred = likelihood(model(xt))
    assert pred.mean.shape == (7, 3)
    assert torch.isfinite(pred.variance).all()


# ------------------------------------------------------------------- BoTorch model


def test_gradient_enhanced_gp_value_posterior_matches_joint_prediction():
    from gp_ntk.bo import GradientEnhancedGP

    torch.manual_seed(1)
    x = torch.rand(6, 2, dtype=DTYPE) * 2 - 1
    y = (x**2).sum(-1, keepdim=True) + 0.5 * x[:, :1]
    g = 2 * x + torch.tensor([0.5, 0.0], dtype=DTYPE)
    model = GradientEnhancedGP(x, y, g)
    model.eval()
    xt = torch.rand(3, 2, dtype=DTYPE) * 2 - 1
    with torch.no_grad():
        post = model.posterior(xt)
        joint = model.gp(xt)
        grad_mean, _ = model.predict_gradient(x)
    assert post.mean.shape == (3, 1)
    assert torch.allclose(post.mean.squeeze(-1), joint.mean[:, 0] * model._y_std + model._y_mean)
    assert torch.allclose(post.variance.squeeze(-1), joint.variance[:, 0] * model._y_std**2)
    assert grad_mean.shape == (6, 2)
    with pytest.raises(ValueError, match="train_grad"):
        GradientEnhancedGP(x, y, g[:, :1])


@pytest.mark.slow
def test_gradient_enhanced_gp_in_an_acquisition_function():
    from botorch.acquisition import LogExpectedImprovement
    from botorch.optim import optimize_acqf

    from gp_ntk.bo import GradientEnhancedGP

    torch.manual_seed(2)
    x = torch.rand(8, 2, dtype=DTYPE) * 2 - 1
    y = -((x - 0.3) ** 2).sum(-1, keepdim=True)
    g = -2 * (x - 0.3)
    model = GradientEnhancedGP(x, y, g).fit(max_iter=20)
    with torch.no_grad():
        grad_mean, _ = model.predict_gradient(x)
    assert torch.allclose(grad_mean, g, atol=0.05)
    acq = LogExpectedImprovement(model, best_f=y.max())
    bounds = torch.tensor([[-1.0, -1.0], [1.0, 1.0]], dtype=DTYPE)
    candidate, value = optimize_acqf(acq, bounds, q=1, num_restarts=2, raw_samples=32)
    assert candidate.shape == (1, 2) and torch.isfinite(value)
    # batched posterior, as acquisition functions call it
    assert model.posterior(torch.rand(5, 3, 2, dtype=DTYPE)).mean.shape == (5, 3, 1)


@pytest.mark.slow
def test_example_quick(tmp_path):
    import importlib.util
    import sys
    from pathlib import Path

    pytest.importorskip("matplotlib")
    path = Path(__file__).resolve().parent.parent / "examples" / "gradient_gp.py"
    spec = importlib.util.spec_from_file_location("gp_ntk_example_gradient_gp", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = sys.argv
    sys.argv = ["gradient_gp.py", "--quick", "--skip-bo", "--output-dir", str(tmp_path)]
    try:
        module.main()
    finally:
        sys.argv = argv
    assert (tmp_path / "gradient_gp_fits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("activation", ["relu", "gelu", gp_ntk.ArcCos(2)], ids=str)
def test_diag_of_distinct_pairs_matches_the_full_matrix(activation):
    x1, x2 = _inputs(4, 4, 3, seed=6)
    k = gp_ntk.NNGPKernelGrad(depth=2, activation=activation, bias_variance=0.2).to(DTYPE)
    with torch.no_grad():
        full = k(x1, x2).to_dense()
        diag = k(x1, x2, diag=True)
    assert diag.shape == (16,)
    assert torch.allclose(diag, full.diagonal(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "activation",
    [
        gp_ntk.Erf(a=2.0, b=0.5, c=0.1),
        gp_ntk.Sin(a=1.0, b=2.0, c=0.3),
        gp_ntk.Cos(a=0.7, b=1.5, c=-0.2),
        gp_ntk.Rbf(gamma=0.8),
        gp_ntk.Exp(a=1.0, b=0.3),
        gp_ntk.Gaussian(a=1.0, b=-0.5),
        gp_ntk.Monomial(degree=2),
        gp_ntk.Polynomial(coef=(0.1, 1.0, 0.5)),
    ],
    ids=repr,
)
def test_parameterised_smooth_activations_match_autograd(activation):
    # the closed forms here assume erf(x), sin(x), cos(x); other parameters (and the other
    # smooth activations) go through the activation's own duals
    x1, x2 = _inputs(seed=2)
    for grad_cls, value_cls in (
        (gp_ntk.NNGPKernelGrad, gp_ntk.NNGPKernel),
        (gp_ntk.NTKKernelGrad, gp_ntk.NTKKernel),
    ):
        k, kv = _pair(
            grad_cls, value_cls, depth=2, activation=activation, weight_variance=1.1, bias_variance=0.1
        )
        with torch.no_grad():
            K = k(x1, x2).to_dense()
        assert _relative_error(K, gradient_kernel_by_autograd(kv, x1, x2)) < 1e-8, value_cls.__name__


def test_sign_is_refused():
    with pytest.raises(ValueError, match="Sign"):
        gp_ntk.NNGPKernelGrad(depth=2, activation=gp_ntk.Sign())
