"""Print the measured errors of gp_ntk against its closed-form references and finite differences.

Run: ``python benchmarks/reference_errors.py``. Every number is a maximum over the inputs
described in its row, in float64 unless the row says otherwise; the test suite asserts bounds
on the same quantities (tests/test_ops.py, test_nngp.py, test_ntk.py, test_erf.py,
test_arc_cosine.py, test_base.py).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _helpers import KERNELS, kernel_function, singular_inputs  # noqa: E402

import gp_ntk  # noqa: E402

torch.set_default_dtype(torch.float64)
ROWS: list[tuple[str, str, float]] = []


def row(name: str, what: str, value: float) -> None:
    ROWS.append((name, what, value))


def closed_forms() -> None:
    theta = torch.linspace(0, math.pi, 2001)
    c, s = torch.cos(theta), torch.sin(theta)
    forms = [math.pi - theta, s + (math.pi - theta) * c, 3 * s * c + (math.pi - theta) * (1 + 2 * c**2)]
    for n, form in enumerate(forms):
        err = (gp_ntk.ops.arccos_j(c, n) - form).abs().max()
        row(f"J_{n}(theta)", "2001 angles in [0, pi], abs", float(err))

    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(50, 5, generator=g), torch.randn(40, 5, generator=g)
    n1, n2 = x1.norm(dim=-1, keepdim=True), x2.norm(dim=-1, keepdim=True).T
    u = torch.clamp(x1 @ x2.T / (n1 * n2), -1, 1)
    kappa = (2 * u * (math.pi - torch.acos(u)) + torch.sqrt(1 - u * u)) / math.pi
    ntk = gp_ntk.NTKKernel(1, "relu", 1.0, 0.0)(x1, x2).to_dense()
    rel = ((ntk - n1 * n2 * kappa / 10) / ntk).abs().max()
    row("2-layer ReLU NTK", "|x||y| kappa(u) / (2d), 50 x 40, rel", float(rel.detach()))

    sigma = torch.tensor([0.5, 1.5, 1.5, 1.5, 1.5, 1.5])
    t1 = torch.cat([torch.ones(50, 1), x1], -1)
    t2 = torch.cat([torch.ones(40, 1), x2], -1)
    williams = (
        2
        / math.pi
        * torch.asin(
            2
            * (t1 * sigma)
            @ t2.T
            / torch.sqrt(
                (1 + 2 * ((t1 * sigma) * t1).sum(-1, keepdim=True))
                * (1 + 2 * ((t2 * sigma) * t2).sum(-1, keepdim=True)).T
            )
        )
    )
    erf = gp_ntk.ErfKernel(1.5, 0.5)(x1, x2).to_dense()
    row("Williams erf kernel", "arcsine formula, 50 x 40, abs", float((erf - williams).abs().max()))


def finite_differences() -> None:
    # autograd against central differences (eps 1e-4) across duplicate/parallel/anti-parallel rows
    for name in KERNELS:
        if name in {"ntk-step", "arccos0"}:
            continue  # Hoelder-1/2 at duplicates: checked off the singular set in the tests
        kernel = KERNELS[name](0.3)
        x = singular_inputs(torch.float64, zero_row=False)
        fn, params = kernel_function(kernel)
        inputs = [x, *params]
        analytic = torch.autograd.functional.jacobian(fn, tuple(inputs))
        worst = 0.0
        for i, inp in enumerate(inputs):
            flat = inp.reshape(-1)
            for j in range(flat.numel()):
                bumped = [t.clone() for t in inputs]
                h = 1e-4
                bumped[i].reshape(-1)[j] += h
                up = fn(*bumped)
                bumped[i].reshape(-1)[j] -= 2 * h
                down = fn(*bumped)
                numeric = (up - down) / (2 * h)
                got = analytic[i].reshape(*numeric.shape, -1)[..., j]
                scale = 1.0 + numeric.abs().max()
                worst = max(worst, float((got - numeric).abs().max() / scale))
        row(f"grad {name}", "autograd vs central diff at cos=+-1, rel", worst)


def float32_vs_float64() -> None:
    x = singular_inputs(torch.float64)
    for name in ("nngp-relu", "ntk-relu", "ntk-erf", "ntk-gelu", "arccos2", "erf-williams"):
        k64 = KERNELS[name](0.3)(x).to_dense()
        torch.set_default_dtype(torch.float32)
        k32 = KERNELS[name](0.3)(x.float()).to_dense().double()
        torch.set_default_dtype(torch.float64)
        row(
            f"float32 {name}",
            "vs float64 at cos=+-1, rel to max",
            float((k32 - k64).abs().max() / k64.abs().max()),
        )


def main() -> None:
    closed_forms()
    float32_vs_float64()
    finite_differences()
    width = max(len(r[0]) for r in ROWS)
    what = max(len(r[1]) for r in ROWS)
    print(f"| {'reference':<{width}} | {'measured over':<{what}} | max error |")
    print(f"|{'-' * (width + 2)}|{'-' * (what + 2)}|-----------|")
    for name, desc, value in ROWS:
        print(f"| {name:<{width}} | {desc:<{what}} | {value:.2e}  |")


if __name__ == "__main__":
    main()
