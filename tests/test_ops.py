"""gp_ntk.ops: J_n and its derivatives, the correlation routine, double factorials."""

from __future__ import annotations

import math

import pytest
import sympy
import torch

from gp_ntk.ops import (
    arccos_j,
    arccos_j_coefficients,
    arccos_j_pair,
    correlation,
    double_factorial,
)

DTYPE = torch.float64


def _closed_form(order: int, theta: torch.Tensor) -> torch.Tensor:
    s, c = torch.sin(theta), torch.cos(theta)
    if order == 0:
        return math.pi - theta
    if order == 1:
        return s + (math.pi - theta) * c
    if order == 2:
        return 3 * s * c + (math.pi - theta) * (1 + 2 * c**2)
    raise ValueError(order)


@pytest.mark.parametrize("order", [0, 1, 2])
def test_closed_forms_j0_j1_j2(order):
    theta = torch.linspace(0, math.pi, 401, dtype=DTYPE)
    got = arccos_j(torch.cos(theta), order)
    torch.testing.assert_close(got, _closed_form(order, theta), rtol=1e-13, atol=1e-13)


def _sympy_j(order: int):
    # Cho & Saul's definition, differentiated symbolically: an independent reference.
    t = sympy.symbols("t")
    expr = (sympy.pi - t) / sympy.sin(t)
    for _ in range(order):
        expr = sympy.diff(expr, t) / sympy.sin(t)
    return sympy.lambdify(t, (-1) ** order * sympy.sin(t) ** (2 * order + 1) * expr, "math")


@pytest.mark.parametrize("order", [3, 4, 5, 6])
def test_general_order_matches_definition(order):
    reference = _sympy_j(order)
    thetas = [0.05, 0.3, 0.9, 1.4, 2.0, 2.7, 3.05]
    got = arccos_j(torch.cos(torch.tensor(thetas, dtype=DTYPE)), order)
    expected = torch.tensor([reference(t) for t in thetas], dtype=DTYPE)
    scale = math.pi * double_factorial(2 * order - 1)  # J_n(0)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-11 * scale)


@pytest.mark.parametrize("order", range(0, 8))
def test_value_at_zero_angle_is_pi_double_factorial(order):
    got = arccos_j(torch.ones((), dtype=DTYPE), order)
    assert float(got) == pytest.approx(math.pi * double_factorial(2 * order - 1), rel=1e-14)
    # J_n(pi) = 0: the two orthants never overlap
    assert float(arccos_j(-torch.ones((), dtype=DTYPE), order)) == pytest.approx(0.0, abs=1e-12)


def test_coefficients_recursion_low_orders():
    assert arccos_j_coefficients(1) == ((0.0, 1.0), (1.0,))
    p2, q2 = arccos_j_coefficients(2)
    assert p2 == (1.0, 0.0, 2.0) and q2 == (0.0, 3.0)
    assert arccos_j_coefficients(0) == ((1.0,), (0.0,))
    with pytest.raises(ValueError, match="order"):
        arccos_j_coefficients(-1)


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
def test_gradcheck_interior(order):
    c = torch.tensor([-0.97, -0.5, 0.0, 0.3, 0.8, 0.99], dtype=DTYPE, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: arccos_j(z, order), (c,))
    if order >= 1:
        assert torch.autograd.gradgradcheck(lambda z: arccos_j(z, order), (c,))


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_at_plus_minus_one_is_finite_and_right(order, dtype):
    c = torch.tensor([-1.0, 1.0], dtype=dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(arccos_j(c, order).sum(), c)
    assert torch.isfinite(grad).all()
    # dJ_n/dc = n^2 J_{n-1}: n^2 pi (2n-3)!! at c = 1, against a one-sided float64 difference
    # quotient from inside [-1, 1]; at c = -1, J_n ~ (1 + c)^(n + 1/2) so the slope is 0.
    h = 1e-9
    one = torch.tensor(1.0, dtype=torch.float64)
    right = (arccos_j(one, order) - arccos_j(one - h, order)) / h
    assert float(grad[1]) == pytest.approx(float(right), rel=1e-4)
    assert float(grad[1]) == pytest.approx(order**2 * math.pi * double_factorial(2 * order - 3), rel=1e-6)
    assert float(grad[0]) == 0.0


def test_order_zero_gradient_at_singular_set_is_zero_subgradient():
    c = torch.tensor([-1.0, 1.0, 0.5], dtype=DTYPE, requires_grad=True)
    (grad,) = torch.autograd.grad(arccos_j(c, 0).sum(), c)
    assert grad[:2].tolist() == [0.0, 0.0]
    assert float(grad[2]) == pytest.approx(1 / math.sqrt(0.75), rel=1e-12)


def test_correlation_zero_variance():
    var1 = torch.tensor([[0.0], [2.0]], dtype=DTYPE, requires_grad=True)
    var2 = torch.tensor([[3.0, 0.0]], dtype=DTYPE, requires_grad=True)
    cov = torch.tensor([[0.0, 0.0], [1.5, 0.0]], dtype=DTYPE, requires_grad=True)
    c, std1, std2 = correlation(var1, cov, var2)
    # zero against non-zero: 0; two zero-norm inputs are the same point: 1
    torch.testing.assert_close(c, torch.tensor([[0.0, 1.0], [1.5 / math.sqrt(6.0), 0.0]], dtype=DTYPE))
    # a square root is rounded differently by different vector units (AVX2 vs AVX-512); the
    # zeros are exact by construction (masked), which atol=0 keeps checking
    eps = torch.finfo(DTYPE).eps
    torch.testing.assert_close(
        std1, torch.tensor([[0.0], [math.sqrt(2.0)]], dtype=DTYPE), rtol=4 * eps, atol=0
    )
    torch.testing.assert_close(std2, torch.tensor([[math.sqrt(3.0), 0.0]], dtype=DTYPE), rtol=4 * eps, atol=0)
    grads = torch.autograd.grad((c + std1 * std2).sum(), (var1, cov, var2))
    assert all(torch.isfinite(g).all() for g in grads)


def test_correlation_clamps_rounding():
    c, _, _ = correlation(torch.ones(1, 1), torch.full((1, 1), 1.0 + 1e-6), torch.ones(1, 1))
    assert float(c) == 1.0


@pytest.mark.parametrize("grad", [False, True])
def test_symmetric_correlation_has_exact_unit_diagonal_and_is_symmetric(grad):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 7, generator=g, dtype=DTYPE) * torch.logspace(-3, 3, 40, dtype=DTYPE)[:, None]
    cov = x @ x.T
    cov = (0.5 * (cov + cov.T)).requires_grad_(grad)  # a BLAS product is not bitwise symmetric
    var = cov.diagonal()
    with torch.set_grad_enabled(grad):
        c, _, _ = correlation(var[:, None], cov, var[None, :], symmetric=True)
        plain, _, _ = correlation(var[:, None], cov, var[None, :])
    assert (c.diagonal() == 1.0).all()
    assert torch.equal(c, c.T)
    # off the diagonal the two agree (to rounding: they need not take the same vector path);
    # on it the computed correlation is 1 only to rounding
    off = ~torch.eye(40, dtype=torch.bool)
    torch.testing.assert_close(c[off], plain[off], rtol=4 * torch.finfo(DTYPE).eps, atol=0)
    assert float((plain.diagonal() - 1.0).abs().max()) <= 4 * torch.finfo(DTYPE).eps


@pytest.mark.parametrize("order", [1, 2, 3])
def test_arccos_j_pair_matches_single_values_and_gradients(order):
    c = torch.cat(
        [torch.linspace(-1.0, 1.0, 41, dtype=DTYPE), torch.tensor([1.0 - 1e-15, -1.0 + 1e-15], dtype=DTYPE)]
    )
    high, low = arccos_j_pair(c, order)
    torch.testing.assert_close(high, arccos_j(c, order), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(low, arccos_j(c, order - 1), rtol=1e-14, atol=1e-14)
    leaf = c.clone().requires_grad_(True)
    weights = torch.randn(2, c.shape[0], dtype=DTYPE, generator=torch.Generator().manual_seed(order))
    high, low = arccos_j_pair(leaf, order)
    (pair_grad,) = torch.autograd.grad((weights[0] * high + weights[1] * low).sum(), leaf)
    single = weights[0] * arccos_j(leaf, order) + weights[1] * arccos_j(leaf, order - 1)
    (single_grad,) = torch.autograd.grad(single.sum(), leaf)
    assert torch.isfinite(pair_grad).all()
    torch.testing.assert_close(pair_grad, single_grad, rtol=1e-13, atol=1e-13)
    interior = torch.linspace(-0.9, 0.9, 7, dtype=DTYPE, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: arccos_j_pair(z, order), (interior,))


def test_arccos_j_pair_needs_order_one():
    with pytest.raises(ValueError, match="order"):
        arccos_j_pair(torch.zeros(3, dtype=DTYPE), 0)


def test_double_factorial():
    assert [double_factorial(n) for n in (-1, 0, 1, 2, 3, 5, 7)] == [1, 1, 1, 2, 3, 15, 105]


@pytest.mark.parametrize("root", ["sqrt", "rsqrt"])
def test_masked_roots_with_and_without_zeros(root):
    from gp_ntk.ops import masked_rsqrt, masked_sqrt

    masked, plain = (masked_sqrt, torch.sqrt) if root == "sqrt" else (masked_rsqrt, torch.rsqrt)
    special = torch.tensor([4.0, 0.25, math.inf, math.nan, -1.0], dtype=torch.float64)
    values = torch.cat([torch.rand(20, dtype=torch.float64) + 0.1, special])
    for with_zero in (False, True):
        var = torch.cat([values, torch.zeros(2, dtype=torch.float64)]) if with_zero else values
        var = var.clone().requires_grad_(True)
        result = masked(var)
        (grad,) = torch.autograd.grad(result.sum(), var)
        reference = var.detach().clone().requires_grad_(True)
        (expected_grad,) = torch.autograd.grad(plain(reference).sum(), reference)
        away = var.detach() != 0
        # away from 0 the plain root, values and gradients (NaN, inf and negatives alike)
        torch.testing.assert_close(result[away], plain(var.detach())[away], equal_nan=True)
        torch.testing.assert_close(grad[away], expected_grad[away], equal_nan=True)
        if with_zero:
            # at 0: value 0 and a zero gradient, not rsqrt's inf or sqrt's infinite slope
            assert torch.equal(result[~away].detach(), torch.zeros(2, dtype=torch.float64))
            assert torch.equal(grad[~away], torch.zeros(2, dtype=torch.float64))


def test_broadcast_shape_agrees_with_torch():
    from gp_ntk.ops import broadcast_shape

    generator = torch.Generator().manual_seed(0)
    sizes = [0, 1, 1, 2, 3]
    for _ in range(3000):
        count = int(torch.randint(1, 5, (), generator=generator))
        shapes = [
            tuple(
                sizes[int(i)]
                for i in torch.randint(
                    0, len(sizes), (int(torch.randint(0, 4, (), generator=generator)),), generator=generator
                )
            )
            for _ in range(count)
        ]
        try:
            expected = torch.broadcast_shapes(*shapes)
        except RuntimeError:
            with pytest.raises(RuntimeError, match="cannot be broadcast"):
                broadcast_shape(*shapes)
            continue
        got = broadcast_shape(*shapes)
        assert isinstance(got, torch.Size)
        assert got == expected, shapes
    assert broadcast_shape(torch.Size([2, 1, 4]), (3, 1), ()) == torch.Size([2, 3, 4])


@pytest.mark.parametrize("shape", [(2, 3, 4), (3, 4), (1, 4), (3, 1), (2, 1, 1), (), (1,)])
def test_sum_to_shape_is_the_gradient_of_broadcasting(shape):
    from gp_ntk.ops import sum_to_shape

    generator = torch.Generator().manual_seed(1)
    value = torch.randn(shape, dtype=torch.float64, generator=generator, requires_grad=True)
    upstream = torch.randn(2, 3, 4, dtype=torch.float64, generator=generator)
    (expected,) = torch.autograd.grad((value.expand(2, 3, 4) * upstream).sum(), value)
    got = sum_to_shape(upstream, torch.Size(shape))
    assert got.shape == torch.Size(shape)
    torch.testing.assert_close(got, expected)
    if torch.Size(shape) == upstream.shape:
        assert got is upstream  # no copy where nothing was broadcast
    with pytest.raises(RuntimeError):
        sum_to_shape(upstream, torch.Size([5]))


def test_wanted_gradients_narrows_to_what_the_backward_pass_uses():
    from gp_ntk.ops import gradient_nodes, wanted_gradients

    seen = []

    class Product(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.nodes = gradient_nodes((a, b))
            return a * b

        @staticmethod
        def backward(ctx, grad):
            seen.append(wanted_gradients(ctx.nodes, ctx.needs_input_grad))
            return grad, grad

    parameter = torch.randn(3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    value = Product.apply(torch.nn.functional.softplus(parameter), x * 2).sum()
    torch.autograd.grad(value, x, retain_graph=True)
    torch.autograd.grad(value, parameter, retain_graph=True)
    value.backward()
    assert seen == [(False, True), (True, False), (True, True)]
    # a leaf inside autograd.grad: the engine cannot say, so it counts as needed
    seen.clear()
    torch.autograd.grad(Product.apply(parameter, x * 2).sum(), x)
    assert seen == [(True, True)]
    # an input without a gradient stays unwanted
    seen.clear()
    torch.autograd.grad(Product.apply(parameter.detach(), x * 2).sum(), x)
    assert seen == [(False, True)]
