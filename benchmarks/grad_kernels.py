#!/usr/bin/env python
"""Gradient kernels: closed-form sensitivities vs the autograd construction.

For each kernel the script builds the ``n(d+1) x n(d+1)`` matrix between values and
gradients of ``n`` random points in two ways and prints time (median of ``--repeats``, after a
warm-up) and the largest relative difference:

* closed form: ``gp_ntk.NNGPKernelGrad`` / ``NTKKernelGrad`` (sensitivities chained per layer);
* autograd: :func:`gp_ntk.kernels.grad.gradient_kernel_by_autograd`, all ``n^2`` pairs of the
  value kernel evaluated with ``diag=True`` and differentiated (``d + 2`` backward passes,
  ``create_graph`` for the mixed block).

The difference is taken over pairs of distinct points (at x = y autograd of the value kernel
misses the derivative through its clamped correlation). GPyTorch's ``RBFKernelGrad`` is timed for scale. float64, CPU, ``torch.no_grad`` for the closed
forms. Times are process CPU times (one thread), which a machine shared with other work does not inflate.

Examples::

    python benchmarks/grad_kernels.py              # n = 500, d = 10
    python benchmarks/grad_kernels.py --quick      # n = 100, d = 5, one repeat
"""

from __future__ import annotations

import argparse
import statistics
import time

import gpytorch
import torch

import gp_ntk
from gp_ntk.kernels.grad import gradient_kernel_by_autograd

CONFIGS = [
    ("NNGP relu, depth 3", gp_ntk.NNGPKernelGrad, gp_ntk.NNGPKernel, dict(depth=3, activation="relu")),
    ("NNGP erf, depth 3", gp_ntk.NNGPKernelGrad, gp_ntk.NNGPKernel, dict(depth=3, activation="erf")),
    ("NTK gelu, depth 3", gp_ntk.NTKKernelGrad, gp_ntk.NTKKernel, dict(depth=3, activation="gelu")),
    (
        "NTK ArcCos(2), depth 2",
        gp_ntk.NTKKernelGrad,
        gp_ntk.NTKKernel,
        dict(depth=2, activation=gp_ntk.ArcCos(2)),
    ),
    (
        "ArcCosine order 1, 2 layers",
        gp_ntk.ArcCosineKernelGrad,
        gp_ntk.ArcCosineKernel,
        dict(order=1, num_layers=2),
    ),
]


def _time(fn, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.process_time()
        out = fn()
        times.append(time.process_time() - start)
    return statistics.median(times), out


_VALUE_KERNELS = {
    gp_ntk.NNGPKernelGrad: gp_ntk.NNGPKernel,
    gp_ntk.NTKKernelGrad: gp_ntk.NTKKernel,
    gp_ntk.ArcCosineKernelGrad: gp_ntk.ArcCosineKernel,
}


def _value_arguments(k) -> dict:
    if isinstance(k, gp_ntk.ArcCosineKernelGrad):
        return dict(order=k.order, num_layers=k.num_layers, bias_variance=0.0)
    return dict(depth=k.depth, activation=k.activation, bias_variance=0.0)


def accuracy_tables() -> None:
    """Agreement with autograd (distinct pairs, n = 6, d = 3) and the homogeneity identities."""
    dtype = torch.float64
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(6, 3, generator=g, dtype=dtype), torch.randn(5, 3, generator=g, dtype=dtype)
    print("\nagreement with autograd of the value kernel (max |diff| / max |K|, n = 6 x 5 points, d = 3)")
    print(f"{'activation':18s} {'NNGP L=1':>9s} {'NNGP L=4':>9s} {'NTK L=1':>9s} {'NTK L=4':>9s}")
    for activation in [
        "relu",
        "leaky_relu",
        "abs",
        "erf",
        "gelu",
        "sin",
        "cos",
        "identity",
        gp_ntk.ArcCos(2),
    ]:
        row = []
        for grad_cls, value_cls in (
            (gp_ntk.NNGPKernelGrad, gp_ntk.NNGPKernel),
            (gp_ntk.NTKKernelGrad, gp_ntk.NTKKernel),
        ):
            for depth in (1, 4):
                kwargs = dict(
                    depth=depth,
                    activation=activation,
                    weight_variance=[1.4, 0.8, 1.1, 0.9, 1.2][: depth + 1],
                    bias_variance=0.1,
                )
                try:
                    k = grad_cls(**kwargs).to(dtype)
                except ValueError:
                    row.append(f"{'refused':>9s}")
                    continue
                kv = value_cls(**kwargs).to(dtype)
                with torch.no_grad():
                    K = k(x1, x2).to_dense()
                ref = gradient_kernel_by_autograd(kv, x1, x2)
                row.append(f"{float((K - ref).abs().max() / ref.abs().max()):9.1e}")
        print(f"{str(activation):18s} " + " ".join(row))
    print("\nhomogeneity identities, bias-free (relative to max |k|): R = r**L")
    print(
        f"{'kernel':34s} {'R':>3s} {'x.grad_x k - Rk':>16s} {'sum x y H_xy - R^2 k':>21s} "
        f"{'x H_xx x - R(R-1)k':>19s}"
    )
    cases = [
        ("NNGP relu L=1", gp_ntk.NNGPKernelGrad(depth=1, activation="relu", bias_variance=0.0), 1),
        ("NNGP relu L=5", gp_ntk.NNGPKernelGrad(depth=5, activation="relu", bias_variance=0.0), 1),
        (
            "NNGP leaky_relu L=3",
            gp_ntk.NNGPKernelGrad(depth=3, activation="leaky_relu", bias_variance=0.0),
            1,
        ),
        (
            "NNGP ArcCos(2) L=2",
            gp_ntk.NNGPKernelGrad(depth=2, activation=gp_ntk.ArcCos(2), bias_variance=0.0),
            4,
        ),
        (
            "NTK ArcCos(2) L=2",
            gp_ntk.NTKKernelGrad(depth=2, activation=gp_ntk.ArcCos(2), bias_variance=0.0),
            4,
        ),
        (
            "ArcCosine order 3, 1 layer",
            gp_ntk.ArcCosineKernelGrad(order=3, num_layers=1, bias_variance=0.0),
            3,
        ),
        (
            "ArcCosine order 2, 3 layers",
            gp_ntk.ArcCosineKernelGrad(order=2, num_layers=3, bias_variance=0.0),
            8,
        ),
    ]
    for name, k, degree in cases:
        with torch.no_grad():
            K = k.to(dtype)(x1, x2).to_dense().reshape(6, 4, 5, 4)
        value = K[:, 0, :, 0]
        euler = torch.einsum("ni,nim->nm", x1, K[:, 1:, :, 0]) - degree * value
        mixed = torch.einsum("ni,mj,nimj->nm", x1, x2, K[:, 1:, :, 1:]) - degree**2 * value
        scale = value.abs().max()
        # the Hessian in x alone is not part of the layout: autograd of the value kernel, per point
        value_kernel = _VALUE_KERNELS[type(k)](**_value_arguments(k)).to(dtype)
        second = 0.0
        for i in range(x1.shape[0]):
            h = torch.autograd.functional.hessian(
                lambda z: value_kernel(z.unsqueeze(0), x2[:1], diag=True).sum(), x1[i]
            )
            second = max(second, abs(float(x1[i] @ h @ x1[i] - degree * (degree - 1) * value[i, 0])))
        print(
            f"{name:34s} {degree:3d} {float(euler.abs().max() / scale):16.1e} "
            f"{float(mixed.abs().max() / scale):21.1e} {second / float(scale):19.1e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="n = 100, d = 5, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.n, args.d, args.repeats = 100, 5, 1
    torch.manual_seed(0)
    dtype = torch.float64
    x = torch.randn(args.n, args.d, dtype=dtype)
    print(
        f"n = {args.n}, d = {args.d}: matrices {args.n * (args.d + 1)} x {args.n * (args.d + 1)}, float64, "
        f"{torch.get_num_threads()} thread(s), CPU time, median of {args.repeats}"
    )
    header = f"{'kernel':30s} {'closed form (s)':>16s} {'autograd (s)':>13s} {'speed-up':>9s} {'rel. diff x≠y':>14s}"
    print(header)
    print("-" * len(header))
    for name, grad_cls, value_cls, kwargs in CONFIGS:
        k = grad_cls(bias_variance=0.1, **kwargs).to(dtype)
        kv = value_cls(bias_variance=0.1, **kwargs).to(dtype)
        with torch.no_grad():
            t_closed, closed = _time(lambda: k(x).to_dense(), args.repeats)
        t_auto, auto = _time(lambda: gradient_kernel_by_autograd(kv, x, x), args.repeats)
        # pairs of distinct points only: at x = y autograd of the value kernel differentiates
        # through its clamped correlation (|c| <= 1) and misses the derivative there, while the
        # closed form gives the continuous limit (tests/test_grad_kernels.py)
        n, d1 = args.n, args.d + 1
        distinct = ~torch.eye(n, dtype=torch.bool).view(n, 1, n, 1).expand(n, d1, n, d1).reshape(
            n * d1, n * d1
        )
        diff = float((closed - auto)[distinct].abs().max() / auto.abs().max())
        print(f"{name:30s} {t_closed:16.3f} {t_auto:13.3f} {t_auto / t_closed:8.1f}x {diff:14.1e}")
    rbf = gpytorch.kernels.RBFKernelGrad().to(dtype)
    with torch.no_grad():
        t_rbf, _ = _time(lambda: rbf(x).to_dense(), args.repeats)
    print(f"{'gpytorch RBFKernelGrad':30s} {t_rbf:16.3f} {'-':>13s}")
    accuracy_tables()


if __name__ == "__main__":
    main()
