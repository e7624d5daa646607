"""gp_ntk.recursion: first-layer covariances and the layer recursion."""

from __future__ import annotations

import pytest
import torch

from gp_ntk import ReLU
from gp_ntk.recursion import layer_recursion, linear_covariances

DTYPE = torch.float64


@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_covariances_full_diag_and_symmetric(with_bias):
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(2, 5, 3, generator=g, dtype=DTYPE)
    x2 = torch.randn(2, 4, 3, generator=g, dtype=DTYPE)
    w = torch.tensor([0.5, 1.0, 2.0], dtype=DTYPE).view(1, 3)
    b = torch.tensor(0.3, dtype=DTYPE).view(1, 1) if with_bias else None
    bias = 0.3 if with_bias else 0.0
    var1, cov, var2 = linear_covariances(x1, x2, w, b, scale=1 / 3)
    expected = (x1 * w) @ x2.transpose(-1, -2) / 3 + bias
    torch.testing.assert_close(cov, expected)
    torch.testing.assert_close(var1.squeeze(-1), (x1 * w * x1).sum(-1) / 3 + bias)
    torch.testing.assert_close(var2.squeeze(-2), (x2 * w * x2).sum(-1) / 3 + bias)
    d1, dc, d2 = linear_covariances(x1, x1[..., :5, :] * 1.0, w, b, diag=True, scale=1 / 3)
    torch.testing.assert_close(dc, d1)
    s1, sc, s2 = linear_covariances(x1, x1, w, b, scale=1 / 3)
    torch.testing.assert_close(s1.squeeze(-1), sc.diagonal(dim1=-2, dim2=-1))
    torch.testing.assert_close(s2.squeeze(-2), sc.diagonal(dim1=-2, dim2=-1))


def test_layer_recursion_cross_symmetric_and_diagonal_agree():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=g, dtype=DTYPE)
    w = torch.tensor(1.0, dtype=DTYPE).view(1, 1)
    b = torch.tensor(0.2, dtype=DTYPE).view(1, 1)
    weights, biases = [torch.tensor(2.0, dtype=DTYPE).view(1, 1)] * 3, [b] * 3
    sym = layer_recursion(*linear_covariances(x, x, w, b), ReLU(), weights, biases, True, symmetric=True)
    cross = layer_recursion(*linear_covariances(x, x.clone(), w, b), ReLU(), weights, biases, True)
    flat_w, flat_b = [v.view(1) for v in weights], [v.view(1) for v in biases]
    diag = layer_recursion(*linear_covariances(x, x, w, b, diag=True), ReLU(), flat_w, flat_b, True)
    for full_sym, full_cross, diagonal in zip(sym, cross, diag):
        torch.testing.assert_close(full_sym, full_cross, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(full_sym.diagonal(), diagonal, rtol=1e-12, atol=1e-12)
