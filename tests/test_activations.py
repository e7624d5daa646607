"""Activations: dual kernels against Monte Carlo, Price's theorem, quadrature and each other."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from gp_ntk import (
    GELU,
    ABReLU,
    Abs,
    ArcCos,
    Cos,
    Erf,
    Identity,
    LeakyReLU,
    Numerical,
    ReLU,
    Sin,
    Step,
    get_activation,
)
from gp_ntk.activations import ACTIVATIONS, Activation

DTYPE = torch.float64

SMOOTH_OR_KINKED = [
    ReLU(),
    LeakyReLU(0.2),
    Abs(),
    ABReLU(-0.5, 1.5),
    Identity(),
    ArcCos(1),
    ArcCos(2),
    ArcCos(3),
    Erf(),
    GELU(),
    Sin(),
    Cos(),
    Numerical(torch.tanh, degree=32),
]
ALL = [*SMOOTH_OR_KINKED, Step(), ArcCos(0)]

# (var1, cov, var2) triples: generic, negative correlation, strong correlation, unequal scales
POINTS = torch.tensor(
    [[1.0, 0.3, 2.0], [0.5, -0.4, 0.7], [1.5, 1.45, 1.5], [0.2, 0.05, 3.0], [2.0, 0.0, 1.0]], dtype=DTYPE
)


def _split(points: torch.Tensor):
    return points[:, 0], points[:, 1], points[:, 2]


def _derivative(act: Activation, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    y = act(x)
    if not y.requires_grad:  # piecewise-constant (step): zero almost everywhere
        return torch.zeros_like(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    return g


def _monte_carlo(act: Activation, var1: float, cov: float, var2: float, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, n, generator=g, dtype=DTYPE)
    chol = torch.linalg.cholesky(
        torch.tensor([[var1, cov], [cov, var2]], dtype=DTYPE) + 1e-15 * torch.eye(2, dtype=DTYPE)
    )
    u, v = chol @ z
    samples = act(u) * act(v)
    d_samples = _derivative(act, u) * _derivative(act, v)
    se = samples.std() / math.sqrt(n)
    d_se = d_samples.std() / math.sqrt(n)
    return samples.mean(), se, d_samples.mean(), d_se


@pytest.mark.parametrize("act", ALL, ids=repr)
def test_duals_match_monte_carlo(act):
    n = 200_000
    worst = 0.0
    for i, (var1, cov, var2) in enumerate(POINTS.tolist()):
        mean, se, d_mean, d_se = _monte_carlo(act, var1, cov, var2, n, seed=i)
        args = [torch.tensor(v, dtype=DTYPE) for v in (var1, cov, var2)]
        q, q_dot = act.duals(*args)
        worst = max(worst, abs(float(q) - float(mean)) / float(se + 1e-12))
        # 5 standard errors: a 1-in-1.7-million event per comparison for a correct formula.
        assert abs(float(q) - float(mean)) <= 5 * float(se) + 1e-12, (var1, cov, var2)
        assert abs(float(q_dot) - float(d_mean)) <= 5 * float(d_se) + 1e-12, (var1, cov, var2)


@pytest.mark.parametrize("act", SMOOTH_OR_KINKED, ids=repr)
def test_price_theorem_derivative_dual_is_cov_derivative_of_dual(act):
    # d/dcov E[phi(u) phi(v)] = E[phi'(u) phi'(v)]: an exact identity tying the two duals.
    if isinstance(act, Numerical):  # the identity holds for the exact integrals: converge them
        act = Numerical(act.fn, degree=96)
    var1, cov, var2 = _split(POINTS)
    cov = cov.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(act.dual(var1, cov, var2).sum(), cov)
    tol = 1e-6 if isinstance(act, Numerical) else 1e-10
    torch.testing.assert_close(grad, act.derivative_dual(var1, cov.detach(), var2), rtol=tol, atol=tol)


@pytest.mark.parametrize("act", ALL, ids=repr)
def test_variance_is_dual_at_equal_points(act):
    var = torch.tensor([0.0, 1e-3, 0.4, 1.0, 3.0, 10.0], dtype=DTYPE)
    torch.testing.assert_close(act.variance(var), act.dual(var, var, var), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        act.derivative_variance(var), act.derivative_dual(var, var, var), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("act", [GELU(), Erf(), Sin(), Cos()], ids=repr)
def test_closed_forms_match_high_degree_quadrature(act):
    # erf saturates within the Gauss-Hermite nodes' range: degree 128 is needed for 1e-9
    reference = Numerical(act.__call__, degree=128)
    var1, cov, var2 = _split(POINTS)
    torch.testing.assert_close(
        act.dual(var1, cov, var2), reference.dual(var1, cov, var2), rtol=1e-9, atol=1e-10
    )
    torch.testing.assert_close(
        act.derivative_dual(var1, cov, var2),
        reference.derivative_dual(var1, cov, var2),
        rtol=1e-9,
        atol=1e-10,
    )


@pytest.mark.parametrize(
    "act,degree", [(ReLU(), 1), (LeakyReLU(0.1), 1), (Abs(), 1), (ArcCos(2), 2), (ArcCos(3), 3), (Step(), 0)]
)
def test_homogeneity_of_dual(act, degree):
    var1, cov, var2 = _split(POINTS)
    for a in (0.3, 2.5):
        scaled = act.dual(a * a * var1, a * cov, var2)
        torch.testing.assert_close(scaled, a**degree * act.dual(var1, cov, var2), rtol=1e-12, atol=1e-14)
    assert act.homogeneity_degree == degree


def test_relu_family_special_cases():
    var1, cov, var2 = _split(POINTS)
    torch.testing.assert_close(ABReLU(0.0, 1.0).dual(var1, cov, var2), ReLU().dual(var1, cov, var2))
    torch.testing.assert_close(ABReLU(1.0, 1.0).dual(var1, cov, var2), cov, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ArcCos(1).dual(var1, cov, var2), ReLU().dual(var1, cov, var2))
    torch.testing.assert_close(Step().dual(var1, cov, var2), ArcCos(0).dual(var1, cov, var2))
    c = cov / torch.sqrt(var1 * var2)
    torch.testing.assert_close(Abs().derivative_dual(var1, cov, var2), 2 / math.pi * torch.asin(c))
    torch.testing.assert_close(
        ReLU().derivative_dual(var1, cov, var2), (math.pi - torch.acos(c)) / (2 * math.pi)
    )


def test_zero_variance_limits_are_finite():
    var1 = torch.tensor([0.0, 0.0, 1.0], dtype=DTYPE, requires_grad=True)
    cov = torch.tensor([0.0, 0.0, 0.0], dtype=DTYPE, requires_grad=True)
    var2 = torch.tensor([0.0, 2.0, 0.0], dtype=DTYPE, requires_grad=True)
    for act in ALL:
        q, q_dot = act.duals(var1, cov, var2)
        assert torch.isfinite(q).all() and torch.isfinite(q_dot).all(), act
        grads = torch.autograd.grad((q + q_dot).sum(), (var1, cov, var2), allow_unused=True)
        assert all(g is None or torch.isfinite(g).all() for g in grads), act
    # documented limits: a zero pre-activation gives relu(0) = 0; for the step, two zero
    # inputs are the same point (1/2) and a zero against a non-zero input gives 1/4
    assert ReLU().dual(var1, cov, var2).tolist() == [0.0, 0.0, 0.0]
    # (1/4 goes through an arccos, rounded differently by different vector units)
    expected = torch.tensor([0.5, 0.25, 0.25], dtype=DTYPE)
    torch.testing.assert_close(
        Step().dual(var1, cov, var2), expected, rtol=4 * torch.finfo(DTYPE).eps, atol=0
    )


def test_numerical_works_without_grad_and_passes_gradients():
    act = Numerical(torch.tanh, degree=16)
    var1, cov, var2 = _split(POINTS)
    with torch.no_grad():
        q_dot = act.derivative_dual(var1, cov, var2)
    assert torch.isfinite(q_dot).all() and not q_dot.requires_grad
    var1 = var1.clone().requires_grad_(True)
    q_dot = act.derivative_dual(var1, cov, var2)
    (g,) = torch.autograd.grad(q_dot.sum(), var1)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("act", ALL, ids=repr)
def test_pickle_round_trip_and_equality(act):
    clone = pickle.loads(pickle.dumps(act))
    assert clone == act
    x = torch.linspace(-2, 2, 9, dtype=DTYPE)
    torch.testing.assert_close(clone(x), act(x))


def test_names_resolve_and_unknown_names_list_known_ones():
    for name in ("relu", "erf", "abs", "step", "identity", "gelu", "sin", "cos"):
        assert isinstance(get_activation(name), Activation)
    assert get_activation("ReLU") == ReLU()
    with pytest.raises(ValueError, match="unknown activation 'swishy'.*relu"):
        get_activation("swishy")
    with pytest.raises(ValueError, match="activation must be"):
        get_activation(3)
    assert set(ACTIVATIONS) >= {"relu", "erf", "abs", "step", "identity", "gelu", "sin", "cos"}


@pytest.mark.parametrize("order", [-1, 1.5, "2", True])
def test_arccos_rejects_bad_order(order):
    with pytest.raises(ValueError, match="order must be a non-negative integer"):
        ArcCos(order)


def test_numerical_rejects_bad_arguments():
    with pytest.raises(ValueError, match="fn must be a callable"):
        Numerical(3.0)
    for degree in (1, 400, 8.0):
        with pytest.raises(ValueError, match=r"degree must be an integer in \[2, 256\]"):
            Numerical(torch.tanh, degree=degree)
