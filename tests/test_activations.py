"""Activations: every registered example against brute-force quadrature, Monte Carlo, Price's
theorem and its own variances; argument validation; the registry; Numerical's checks."""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest
import torch

import gp_ntk
from gp_ntk.activations import (
    ACTIVATION_CLASSES,
    ACTIVATIONS,
    ABReLU,
    Activation,
    ArcCos,
    Erf,
    Exp,
    Gaussian,
    LeakyReLU,
    Monomial,
    Numerical,
    Polynomial,
    ReLU,
    Step,
    activation_examples,
    get_activation,
    register_activation,
)

DTYPE = torch.float64
EXAMPLES = activation_examples()
EXACT = [act for act in EXAMPLES if act.exact]
HOMOGENEOUS = [act for act in EXAMPLES if act.homogeneity_degree is not None]

# (var1, cov, var2) triples: generic, negative correlation, strong correlation, unequal scales,
# uncorrelated, a zero-variance input (a zero-norm row without bias)
POINTS = torch.tensor(
    [
        [1.0, 0.3, 2.0],
        [0.5, -0.4, 0.7],
        [1.5, 1.45, 1.5],
        [0.2, 0.05, 3.0],
        [2.0, 0.0, 1.0],
        [0.0, 0.0, 1.3],
    ],
    dtype=DTYPE,
)
POSITIVE = POINTS[:-1]


def _split(points: torch.Tensor):
    return points[:, 0], points[:, 1], points[:, 2]


def _derivative(fn, x: torch.Tensor) -> torch.Tensor:
    """phi' by autograd, 0 where phi is piecewise constant (as the derivative duals take it)."""
    x = x.detach().requires_grad_(True)
    y = fn(x)
    if not y.requires_grad:
        return torch.zeros_like(x)
    (g,) = torch.autograd.grad(y.sum(), x, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


def _continuous(act: Activation) -> bool:
    """Price's theorem needs a continuous phi: a jump's derivative is a delta, not autograd's 0."""
    x = torch.tensor([-1e-9, 0.0, 1e-9], dtype=DTYPE)
    y = act(x)
    return bool((y - y[1]).abs().max() < 1e-6)


_LEGENDRE = np.polynomial.legendre.leggauss(96)
_HALF_WIDTH = 14.0  # Gaussian tail beyond 14 sigma: exp(-98) relative


def _pieces(low: torch.Tensor, high: torch.Tensor):
    """Gauss-Legendre nodes and weights on [low, high] (broadcast), 96 per interval."""
    x, w = (torch.as_tensor(v, dtype=DTYPE) for v in _LEGENDRE)
    half = (high - low).unsqueeze(-1) / 2
    return low.unsqueeze(-1) + half * (x + 1), half * w


def _density(z):
    return torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def brute_force(f, g, var1: float, cov: float, var2: float) -> float:
    r"""E[f(u) g(v)] by Gauss-Legendre on [-14, 14]^2 in whitened coordinates, split where
    u = 0 and where v = 0: every activation here is smooth away from 0, so each piece
    converges exponentially, kinks and jumps included."""
    s1, s2 = math.sqrt(var1), math.sqrt(var2)
    c = 0.0 if s1 == 0 or s2 == 0 else max(-1.0, min(1.0, cov / (s1 * s2)))
    r = math.sqrt(max(0.0, 1.0 - c * c))
    length = torch.tensor(_HALF_WIDTH, dtype=DTYPE)
    z1, w1 = (torch.cat(t) for t in zip(_pieces(-length, torch.zeros(())), _pieces(torch.zeros(()), length)))
    left = f(s1 * z1) * _density(z1) * w1
    if r == 0:
        return float((left * g(s2 * c * z1)).sum())
    kink = torch.clamp(-c * z1 / r, -_HALF_WIDTH, _HALF_WIDTH)
    total = 0.0
    for low, high in ((-length.expand_as(kink), kink), (kink, length.expand_as(kink))):
        z2, w2 = _pieces(low, high)
        v = s2 * (c * z1.unsqueeze(-1) + r * z2)
        total += float((left * (g(v) * _density(z2) * w2).sum(-1)).sum())
    return total


def _oracle(act: Activation, derivative: bool = False):
    fn = (lambda x: _derivative(act, x)) if derivative else act
    return torch.tensor([brute_force(fn, fn, *p) for p in POSITIVE.tolist()], dtype=DTYPE)


@pytest.mark.parametrize("act", EXACT, ids=repr)
def test_duals_match_brute_force_quadrature(act):
    # (a zero variance is a convention, not an integral: test_documented_zero_variance_values)
    var1, cov, var2 = _split(POSITIVE)
    q, q_dot = act.duals(var1, cov, var2)
    torch.testing.assert_close(q, _oracle(act), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(q_dot, _oracle(act, derivative=True), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(act.dual(var1, cov, var2), q, rtol=1e-14, atol=0.0)
    torch.testing.assert_close(act.derivative_dual(var1, cov, var2), q_dot, rtol=1e-14, atol=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("act", [a for a in EXAMPLES if not a.exact], ids=repr)
def test_quadrature_activations_converge_to_brute_force(act):
    fine = dataclasses.replace(act, degree=160)
    var1, cov, var2 = _split(POSITIVE)
    q, q_dot = fine.duals(var1, cov, var2)
    torch.testing.assert_close(q, _oracle(act), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(q_dot, _oracle(act, derivative=True), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("act", EXAMPLES, ids=repr)
def test_duals_match_monte_carlo(act):
    # An independent check of the oracle's premise (the Gaussian expectation itself): the sample
    # mean of phi(u) phi(v) within 6 standard errors, the error computed exactly from the
    # brute-force second moment E[phi(u)^2 phi(v)^2] rather than from the (heavy-tailed) sample.
    n = 100_000
    for i, (var1, cov, var2) in enumerate(POSITIVE.tolist()):
        g = torch.Generator().manual_seed(i)
        chol = torch.linalg.cholesky(torch.tensor([[var1, cov], [cov, var2]], dtype=DTYPE))
        u, v = chol @ torch.randn(2, n, generator=g, dtype=DTYPE)
        args = [torch.tensor(x, dtype=DTYPE) for x in (var1, cov, var2)]
        q, q_dot = act.duals(*args)
        for sample, mean, fn in (
            (act(u) * act(v), q, act),
            (_derivative(act, u) * _derivative(act, v), q_dot, lambda x: _derivative(act, x)),
        ):
            second = brute_force(lambda x: fn(x) ** 2, lambda x: fn(x) ** 2, var1, cov, var2)
            se = math.sqrt(max(second - float(mean) ** 2, 0.0) / n)
            assert abs(float(sample.mean()) - float(mean)) <= 6 * se + 1e-12, (var1, cov, var2)


@pytest.mark.parametrize(
    "act",
    [pytest.param(a, marks=() if a.exact else pytest.mark.slow) for a in EXAMPLES if _continuous(a)],
    ids=repr,
)
def test_price_theorem_default_derivative_dual_agrees_with_closed_form(act):
    # d/dcov E[phi(u) phi(v)] = E[phi'(u) phi'(v)]: the base class's autograd default against
    # each activation's own derivative dual
    if not act.exact:  # the identity holds for the exact integrals: converge them
        act = dataclasses.replace(act, degree=96)
    var1, cov, var2 = _split(POSITIVE)
    by_autograd = Activation.derivative_dual(act, var1, cov, var2)
    tol = 1e-10 if act.exact else 1e-6
    torch.testing.assert_close(by_autograd, act.derivative_dual(var1, cov, var2), rtol=tol, atol=tol)


@pytest.mark.parametrize("act", EXAMPLES, ids=repr)
def test_variance_is_dual_at_equal_points(act):
    var = torch.tensor([0.0, 1e-3, 0.4, 1.0, 2.0, 3.0], dtype=DTYPE)
    if isinstance(act, Gaussian) and act.b > 0:
        var = var[var < 0.2 / act.b]
    torch.testing.assert_close(act.variance(var), act.dual(var, var, var), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        act.derivative_variance(var), act.derivative_dual(var, var, var), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("act", HOMOGENEOUS, ids=repr)
def test_homogeneity_of_dual(act):
    var1, cov, var2 = _split(POSITIVE)
    for a in (0.3, 2.5):
        scaled = act.dual(a * a * var1, a * cov, var2)
        torch.testing.assert_close(
            scaled, a**act.homogeneity_degree * act.dual(var1, cov, var2), rtol=1e-12, atol=1e-14
        )
        x = torch.linspace(-2, 2, 9, dtype=DTYPE)
        torch.testing.assert_close(act(a * x), a**act.homogeneity_degree * act(x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("act", EXAMPLES, ids=repr)
def test_zero_variance_limits_are_finite(act):
    var1 = torch.tensor([0.0, 0.0, 1.0], dtype=DTYPE, requires_grad=True)
    cov = torch.tensor([0.0, 0.0, 0.0], dtype=DTYPE, requires_grad=True)
    var2 = torch.tensor([0.0, 2.0, 0.0], dtype=DTYPE, requires_grad=True)
    q, q_dot = act.duals(var1, cov, var2)
    assert torch.isfinite(q).all() and torch.isfinite(q_dot).all()
    grads = torch.autograd.grad((q + q_dot).sum(), (var1, cov, var2), allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


def test_documented_zero_variance_values():
    var1, cov, var2 = (torch.tensor(v, dtype=DTYPE) for v in ([0.0, 0.0, 1.0], [0.0] * 3, [0.0, 2.0, 0.0]))
    # relu(0) = 0; for the step two zero inputs are the same point (1/2), a zero against a
    # non-zero input gives 1/4; sign(0) = 0
    torch.testing.assert_close(ReLU().dual(var1, cov, var2), torch.zeros(3, dtype=DTYPE))
    torch.testing.assert_close(Step().dual(var1, cov, var2), torch.tensor([0.5, 0.25, 0.25], dtype=DTYPE))
    torch.testing.assert_close(gp_ntk.Sign().dual(var1, cov, var2), torch.zeros(3, dtype=DTYPE))


@pytest.mark.parametrize("act", EXAMPLES, ids=repr)
def test_pickle_round_trip_and_equality(act):
    clone = pickle.loads(pickle.dumps(act))
    assert clone == act and hash(clone) == hash(act)
    x = torch.linspace(-2, 2, 9, dtype=DTYPE)
    torch.testing.assert_close(clone(x), act(x))
    var1, cov, var2 = _split(POSITIVE)
    torch.testing.assert_close(clone.dual(var1, cov, var2), act.dual(var1, cov, var2))


@pytest.mark.parametrize("act", EXACT, ids=repr)
def test_deep_kernels_accept_every_activation(act):
    # the recursion's two paths (correlation_duals on blocks, duals elementwise for diag=True)
    # give the same kernel; the matrix is symmetric positive semi-definite
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    kernel = gp_ntk.NTKKernel(2, act, weight_variance=0.8, bias_variance=0.2).to(DTYPE)
    with torch.no_grad():
        nngp, ntk = kernel.nngp_and_ntk(x, x)
        nngp_diag, ntk_diag = kernel.nngp_and_ntk(x, x, diag=True)
    for full, diag in ((nngp, nngp_diag), (ntk, ntk_diag)):
        torch.testing.assert_close(full.diagonal(), diag, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(full, full.mT, rtol=0.0, atol=0.0)
        eigenvalues = torch.linalg.eigvalsh(full)
        assert eigenvalues.min() >= -1e-10 * eigenvalues.abs().max()


# --------------------------------------------------------------------------- the default derivative dual


@dataclasses.dataclass(frozen=True)
class _ErfFromDualOnly(Activation):
    """erf with only its dual written: the derivative dual comes from Price's theorem."""

    def __call__(self, x):
        return torch.erf(x)

    def dual(self, var1, cov, var2):
        return Erf().dual(var1, cov, var2)


def test_one_method_activation_gets_its_derivative_dual_by_autograd():
    act, reference = _ErfFromDualOnly(), Erf()
    var1, cov, var2 = _split(POINTS)
    torch.testing.assert_close(
        act.derivative_dual(var1, cov, var2),
        reference.derivative_dual(var1, cov, var2),
        rtol=1e-12,
        atol=1e-14,
    )
    q, q_dot = act.duals(var1, cov, var2)
    torch.testing.assert_close(q_dot, reference.derivative_dual(var1, cov, var2), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(act.derivative_variance(var1), reference.derivative_variance(var1))
    with torch.no_grad():
        assert not act.derivative_dual(var1, cov, var2).requires_grad
    # differentiable in turn (create_graph): the gradient of the derivative dual in var1
    var1, cov, var2 = _split(POSITIVE)
    leaf = var1.clone().requires_grad_(True)
    (ours,) = torch.autograd.grad(act.derivative_dual(leaf, cov, var2).sum(), leaf)
    leaf = var1.clone().requires_grad_(True)
    (theirs,) = torch.autograd.grad(reference.derivative_dual(leaf, cov, var2).sum(), leaf)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    # broadcasting (n x 1, n x m, 1 x m) as the recursion calls it
    full = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.4, -0.5]], dtype=DTYPE)
    rows, columns = torch.tensor([[1.0], [2.0]], dtype=DTYPE), torch.tensor([[0.5, 1.5, 1.0]], dtype=DTYPE)
    torch.testing.assert_close(
        act.derivative_dual(rows, full, columns), reference.derivative_dual(rows, full, columns)
    )


def test_one_method_activation_runs_in_the_deep_kernels():
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    ours = gp_ntk.NTKKernel(3, _ErfFromDualOnly(), 1.3, 0.1).to(DTYPE)
    reference = gp_ntk.NTKKernel(3, "erf", 1.3, 0.1).to(DTYPE)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).to_dense(), reference(x).to_dense(), rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- registry and names


def test_every_name_resolves_to_its_class_and_unknown_names_list_known_ones():
    for name, cls in ACTIVATIONS.items():
        assert isinstance(get_activation(name), cls)
        assert get_activation(name.upper()) == cls()
    for name in ("relu", "erf", "abs", "step", "identity", "gelu", "sin", "cos", "leaky_relu"):
        assert name in ACTIVATIONS
    with pytest.raises(ValueError, match="unknown activation 'swishy'.*relu"):
        get_activation("swishy")
    with pytest.raises(ValueError, match="activation must be"):
        get_activation(3)


def test_every_registered_class_has_examples_and_is_exported():
    for cls in ACTIVATION_CLASSES:
        examples = cls.examples()
        assert examples and all(type(e) is cls for e in examples), cls
        assert getattr(gp_ntk, cls.__name__) is cls
        assert cls.__name__ in gp_ntk.__all__


def test_register_activation_adds_names_and_examples():
    @dataclasses.dataclass(frozen=True)
    class Doubled(Activation):
        def __call__(self, x):
            return 2.0 * x

        def dual(self, var1, cov, var2):
            return 4.0 * cov

    try:
        register_activation("doubled_for_test")(Doubled)
        assert get_activation("doubled_for_test") == Doubled()
        assert Doubled() in activation_examples()
        with pytest.raises(ValueError, match="already taken"):
            register_activation("relu")(Doubled)
    finally:
        ACTIVATIONS.pop("doubled_for_test", None)
        ACTIVATION_CLASSES.remove(Doubled)
    with pytest.raises(ValueError, match="Activation subclass"):
        register_activation("x")(int)


def test_old_names_and_defaults_keep_working():
    var1, cov, var2 = _split(POSITIVE)
    torch.testing.assert_close(ABReLU(0.0, 1.0).dual(var1, cov, var2), ReLU().dual(var1, cov, var2))
    torch.testing.assert_close(ABReLU(1.0, 1.0).dual(var1, cov, var2), cov, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ArcCos(1).dual(var1, cov, var2), ReLU().dual(var1, cov, var2))
    torch.testing.assert_close(Step().dual(var1, cov, var2), ArcCos(0).dual(var1, cov, var2))
    assert Erf() == Erf(1.0, 1.0, 0.0) and gp_ntk.Sin() == gp_ntk.Sin(a=1, b=1, c=0)
    assert LeakyReLU(0.2).a == 0.2 and LeakyReLU().slope == 0.01
    torch.testing.assert_close(
        Polynomial((0.0, 0.0, 1.0)).dual(var1, cov, var2), Monomial(2).dual(var1, cov, var2)
    )
    torch.testing.assert_close(
        gp_ntk.Rbf(0.7).dual(var1, cov, var2),
        gp_ntk.Sin(math.sqrt(2.0), math.sqrt(1.4), math.pi / 4).dual(var1, cov, var2),
        rtol=1e-12,
        atol=1e-14,
    )


# --------------------------------------------------------------------------- argument validation


def _float_fields(cls):
    return [f.name for f in dataclasses.fields(cls) if f.init and f.type in ("float", float)]


@pytest.mark.parametrize("cls", [c for c in ACTIVATION_CLASSES if _float_fields(c)], ids=lambda c: c.__name__)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "x", None, True, 1j])
def test_real_arguments_are_validated_at_construction(cls, bad):
    for name in _float_fields(cls):
        with pytest.raises(ValueError, match=rf"{cls.__name__}: {name} must be a finite real number"):
            cls(**{name: bad})


@pytest.mark.parametrize("cls", [c for c in ACTIVATION_CLASSES if _float_fields(c)], ids=lambda c: c.__name__)
def test_real_arguments_accept_numpy_and_tensor_scalars(cls):
    name = _float_fields(cls)[0]
    value = 0.5
    for form in (np.float64(value), np.float32(value), torch.tensor(value), np.array(value), 1):
        made = cls(**{name: form})
        assert isinstance(getattr(made, name), float)
    assert cls(**{name: np.float64(value)}) == cls(**{name: value})


def test_named_failures_of_the_probe():
    with pytest.raises(ValueError, match="LeakyReLU: slope must be a finite real number"):
        LeakyReLU(math.nan)
    with pytest.raises(ValueError, match="ABReLU: a must be a finite real number"):
        ABReLU(math.inf, 1)
    with pytest.raises(ValueError, match="ABReLU: a must be a finite real number, got 'x'"):
        ABReLU("x", "y")
    with pytest.raises(ValueError, match="gamma must be a finite real number >= 0"):
        gp_ntk.Rbf(-1.0)
    with pytest.raises(ValueError, match=r"Polynomial: coef\[1\] must be a finite real number"):
        Polynomial([1.0, math.nan])
    for bad in ([], "12", 3.0, [0.0] * 70):
        with pytest.raises(ValueError, match="Polynomial: coef must be a sequence"):
            Polynomial(bad)
    for bad in (-1, 2.5, True, 65, "2"):
        with pytest.raises(ValueError, match=r"Monomial: degree must be an integer in \[0, 64\]"):
            Monomial(bad)


@pytest.mark.parametrize("order", [-1, 1.5, "2", True])
def test_arccos_rejects_bad_order(order):
    with pytest.raises(ValueError, match="order must be a non-negative integer"):
        ArcCos(order)


def test_integral_numbers_are_accepted_consistently():
    assert Numerical(torch.tanh, degree=np.int64(8)) == Numerical(torch.tanh, degree=8)
    assert type(Numerical(torch.tanh, degree=np.int64(8)).degree) is int
    assert Monomial(np.int64(3)) == Monomial(3) and ArcCos(np.int32(2)) == ArcCos(2)
    assert Polynomial(np.array([0.5, 1.0])) == Polynomial((0.5, 1.0))


def test_numerical_rejects_bad_arguments():
    with pytest.raises(ValueError, match="fn must be a callable"):
        Numerical(3.0)
    for degree in (1, 400, 8.0, True):
        with pytest.raises(ValueError, match=r"degree must be an integer in \[2, 256\]"):
            Numerical(torch.tanh, degree=degree)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x - x.mean(),
        lambda x: torch.softmax(x, dim=-1),
        lambda x: x / x.abs().max(),
        lambda x: torch.cumsum(x, dim=-1),
    ],
    ids=["centering", "softmax", "normalisation", "cumsum"],
)
def test_numerical_refuses_functions_that_are_not_elementwise(fn):
    with pytest.raises(ValueError, match="fn must be elementwise"):
        Numerical(fn)


def test_numerical_refuses_shape_changes_and_non_finite_functions():
    with pytest.raises(ValueError, match=r"fn must be elementwise.*\(4, 6\) tensor to \(\)"):
        Numerical(lambda x: x.sum())
    with pytest.raises(ValueError, match="fn must be finite on the whole real line"):
        Numerical(torch.log)
    with pytest.raises(ValueError, match="fn could not be evaluated"):
        Numerical(lambda x: x.not_a_method())


@pytest.mark.parametrize(
    "fn", [torch.tanh, torch.sin, torch.nn.functional.silu, torch.nn.Tanh(), lambda x: x * torch.sigmoid(x)]
)
def test_numerical_accepts_elementwise_functions(fn):
    act = Numerical(fn, degree=8)
    var1, cov, var2 = _split(POSITIVE)
    assert torch.isfinite(act.dual(var1, cov, var2)).all()


def test_numerical_builds_its_rule_once(monkeypatch):
    act = Numerical(torch.tanh, degree=12)

    def refuse(*args, **kwargs):
        raise AssertionError("the quadrature rule was rebuilt on a call")

    monkeypatch.setattr(np.polynomial.hermite_e, "hermegauss", refuse)
    var1, cov, var2 = _split(POSITIVE)
    act.duals(var1, cov, var2)
    act.variance(var1)
    act.derivative_variance(var1)


def test_numerical_works_without_grad_and_passes_gradients():
    act = Numerical(torch.tanh, degree=16)
    var1, cov, var2 = _split(POSITIVE)
    with torch.no_grad():
        q_dot = act.derivative_dual(var1, cov, var2)
    assert torch.isfinite(q_dot).all() and not q_dot.requires_grad
    var1 = var1.clone().requires_grad_(True)
    q_dot = act.derivative_dual(var1, cov, var2)
    (g,) = torch.autograd.grad(q_dot.sum(), var1)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


# --------------------------------------------------------------------------- range of Exp and Gaussian


def test_exp_overflow_is_an_error_naming_the_activation():
    var = torch.tensor([1.0, 400.0], dtype=DTYPE)
    with pytest.raises(FloatingPointError, match=r"Exp\(a=1.0, b=1.0\).*overflows torch.float64"):
        Exp().variance(var)
    with pytest.raises(FloatingPointError, match="overflows"):
        Exp().dual(var, var, var)
    kernel = gp_ntk.NNGPKernel(3, Exp(), weight_variance=4.0, bias_variance=0.1).to(DTYPE)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=DTYPE) * 3
    with pytest.raises(FloatingPointError, match=r"Exp\(a=1.0, b=1.0\)"):
        kernel(x).to_dense()


def test_gaussian_beyond_its_range_is_an_error_not_nan():
    act = Gaussian(1.0, 0.5)  # finite only while every variance stays below 1 / (4 b) = 0.5
    ok = torch.tensor([0.1, 0.4], dtype=DTYPE)
    assert torch.isfinite(act.variance(ok)).all()
    bad = torch.tensor([0.1, 0.6], dtype=DTYPE)
    with pytest.raises(FloatingPointError, match=r"below 1/\(4b\) = 0.5"):
        act.variance(bad)
    # a pair is finite while 2b times the largest eigenvalue of its covariance stays below 1, so one
    # variance beyond 1/(4b) can still pair finitely with a small one
    pair = [torch.tensor(v, dtype=DTYPE) for v in (0.6, 0.0, 0.1)]
    reference = torch.tensor(brute_force(act, act, 0.6, 0.0, 0.1), dtype=DTYPE)
    torch.testing.assert_close(act.dual(*pair), reference, rtol=1e-10, atol=0.0)
    with pytest.raises(FloatingPointError, match="infinite for b > 0"):
        act.dual(*(torch.tensor(v, dtype=DTYPE) for v in (1.2, 0.0, 0.1)))
