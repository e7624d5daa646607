"""The NTK of a network that ends at its activation, against the angle between two inputs.

neural-tangents' ``stax.serial(Dense(1, W_std, b_std), Erf())`` has no read-out layer: its
kernels are :math:`\\mathbb E[\\phi(u)\\phi(v)]` (NNGP) and
:math:`\\mathbb E[\\phi'(u)\\phi'(v)]\\,\\Theta^{(L)}` (NTK) under the last pre-activation
covariance. In gp_ntk that is ``NTKKernel(depth=1, activation=Erf(), weight_variance=W_std**2,
bias_variance=b_std**2, readout=False)``. This script evaluates it for inputs on the unit circle,
:math:`x = (1, 0)` and :math:`y = (\\cos\\theta, \\sin\\theta)`, :math:`\\theta \\in [0, \\pi]`:

* left: the erf NTK (solid) and NNGP (dashed) at depth 1 for several ``W_std``;
* right: the ReLU NTK and NNGP without read-out at depths 1, 2 and 3 (He initialisation).

It writes ``readout_free_ntk.png`` and prints a few values (the NTK at :math:`\\theta = 0,
\\pi/2, \\pi`), checked against one very wide finite network of
:class:`gp_ntk.networks.NetworkMLP` without read-out when not ``--quick``.

Usage::

    python examples/readout_free_ntk.py [--output-dir examples/output] [--quick]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib
import torch

import gp_ntk

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DTYPE = torch.float64


def circle(num_angles: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Angles in [0, pi], the fixed point (1, 0) and the points (cos theta, sin theta)."""
    theta = torch.linspace(0.0, math.pi, num_angles, dtype=DTYPE)
    x = torch.tensor([[1.0, 0.0]], dtype=DTYPE)
    y = torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)
    return theta, x, y


def readout_free_kernels(kernel: gp_ntk.NTKKernel, x: torch.Tensor, y: torch.Tensor):
    """NNGP and NTK between ``x`` (one point) and every row of ``y``."""
    with torch.no_grad():
        nngp, ntk = kernel.nngp_and_ntk(x, y)
    return nngp.squeeze(0), ntk.squeeze(0)


def erf_kernel(w_std: float, b_std: float) -> gp_ntk.NTKKernel:
    return gp_ntk.NTKKernel(
        depth=1, activation=gp_ntk.Erf(), weight_variance=w_std**2, bias_variance=b_std**2, readout=False
    ).to(DTYPE)


def relu_kernel(depth: int) -> gp_ntk.NTKKernel:
    return gp_ntk.NTKKernel(
        depth=depth, activation="relu", weight_variance=2.0, bias_variance=0.0, readout=False
    ).to(DTYPE)


def plot(path: Path, num_angles: int) -> dict[str, torch.Tensor]:
    theta, x, y = circle(num_angles)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    values = {}
    for w_std, colour in zip((0.5, 1.0, 2.0, 4.0), ("C0", "C1", "C2", "C3")):
        nngp, ntk = readout_free_kernels(erf_kernel(w_std, 0.1), x, y)
        left.plot(theta, ntk, color=colour, label=f"NTK, W_std = {w_std:g}")
        left.plot(theta, nngp, color=colour, ls="--", lw=1.0)
        values[f"erf W_std={w_std:g}"] = ntk
    left.set_title("stax.serial(Dense(1, W_std, 0.1), Erf())\nNTK (solid), NNGP (dashed)")
    for depth, colour in zip((1, 2, 3), ("C0", "C1", "C2")):
        nngp, ntk = readout_free_kernels(relu_kernel(depth), x, y)
        right.plot(theta, ntk, color=colour, label=f"NTK, depth {depth}")
        right.plot(theta, nngp, color=colour, ls="--", lw=1.0)
        values[f"relu depth={depth}"] = ntk
    right.set_title("stax.serial(*[Dense(1, sqrt(2)), Relu()] * depth)\nNTK (solid), NNGP (dashed)")
    for axis in (left, right):
        axis.set_xlabel(r"angle $\theta$ between $x$ and $y$ on the unit circle")
        axis.set_xticks([0, math.pi / 4, math.pi / 2, 3 * math.pi / 4, math.pi])
        axis.set_xticklabels(["0", r"$\pi/4$", r"$\pi/2$", r"$3\pi/4$", r"$\pi$"])
        axis.axhline(0, color="0.8", lw=0.8)
        axis.legend(fontsize=8)
    left.set_ylabel("kernel value")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return values


def finite_network_ntk(
    kernel: gp_ntk.NTKKernel, x: torch.Tensor, y: torch.Tensor, width: int
) -> torch.Tensor:
    """Empirical NTK of one random network without read-out, seen through a frozen random
    read-out :math:`v^\\top h(x)/\\sqrt n` (the gradients are the network's only).

    A single unit's own tangent kernel does not converge: it keeps the random factor
    :math:`\\phi'(z_i(x))\\phi'(z_i(y))`, whose mean over the units is the limit's
    :math:`\\mathbb E[\\phi'(u)\\phi'(v)]`; a fixed unit-variance read-out averages the units.
    """
    from torch.func import functional_call, jacrev

    generator = torch.Generator().manual_seed(0)
    net = gp_ntk.networks.from_kernel(kernel, 2, width, generator=generator)
    readout = torch.randn(width, generator=generator, dtype=DTYPE) / math.sqrt(width)
    points = torch.cat([x, y])
    params = {k: v.detach() for k, v in net.named_parameters()}
    jac = jacrev(lambda p: functional_call(net, p, (points,)) @ readout)(params)
    flat = torch.cat([j.reshape(points.shape[0], -1) for j in jac.values()], dim=-1)
    return flat[0] @ flat[1:].T


def main(argv: list[str] | None = None) -> dict[str, torch.Tensor]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "output")
    parser.add_argument("--quick", action="store_true", help="fewer angles, no finite-network check")
    args = parser.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    values = plot(args.output_dir / "readout_free_ntk.png", 61 if args.quick else 361)
    print(f"{'kernel':<16} {'theta = 0':>10} {'pi/2':>10} {'pi':>10}")
    for name, ntk in values.items():
        print(f"{name:<16} {ntk[0]:10.4f} {ntk[len(ntk) // 2]:10.4f} {ntk[-1]:10.4f}")
    if not args.quick:
        theta, x, y = circle(5)
        for name, kernel in (("erf W_std=2", erf_kernel(2.0, 0.1)), ("relu depth=2", relu_kernel(2))):
            _, exact = readout_free_kernels(kernel, x, y)
            finite = finite_network_ntk(kernel, x, y, width=2048)
            error = float((finite - exact).abs().max() / exact.abs().max())
            print(f"{name}: one width-2048 network's NTK is {error:.1%} off the limit")
    return values


if __name__ == "__main__":
    main()
