"""NeuralEF against a dense eigendecomposition: eigenvalues, eigenfunctions and the kernel.

Data of ``benchmarks/large_n.py`` (inputs uniform in [-1, 1]^d), ReLU NNGP depth 2
(:math:`\\sigma_w^2 = 2`, :math:`\\sigma_b^2 = 0.1`) as in ``approximation_accuracy.py``. The
reference is :func:`gp_ntk.spectral.eigenmodes` (dense ``eigh``) on ``--reference`` points; the
comparison is on ``--held-out`` other points. For each NeuralEF fit (``--eigenfunctions`` k,
``--steps`` list, ``--batch``, ``--lr``) the script reports, with the eigenvalues NeuralEF
tracked during training (moving averages of :math:`R_{jj}`) and after the Rayleigh–Ritz step
on ``--ritz`` training points (:meth:`NeuralEigenfunctions.rayleigh_ritz`):

* ``sum/diag``: :math:`\\sum_j\\lambda_j` over the mean of :math:`k(x, x)` (at most 1 for any
  orthonormal functions), and the same ratio of the reference's top k;
* ``eig err``: median and largest :math:`|\\lambda_j/\\lambda_j^{ref} - 1|`;
* ``corr``: median held-out :math:`|\\rho(\\psi_j, \\psi_j^{ref})|` (sign-free; low for modes
  inside degenerate eigenspaces, where single functions are arbitrary);
* ``span R2``: mean over the reference's top k of the variance of :math:`\\psi_j^{ref}`
  explained by the span of the k learned functions (held-out; 1 = the top eigenspace found);
* ``kernel err``: relative Frobenius error of :math:`\\sum_j\\lambda_j\\psi_j\\psi_j^\\top` on the
  held-out points, against the rank-k reference (its Nyström extension) in the last column.

Usage::

    python benchmarks/neuralef_convergence.py --eigenfunctions 16,64 --steps 500,2000,8000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from large_n import make_data  # noqa: E402

import gp_ntk  # noqa: E402
from gp_ntk import spectral  # noqa: E402


def correlations(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = (a - a.mean(0)) / a.std(0).clamp_min(1e-300)
    b = (b - b.mean(0)) / b.std(0).clamp_min(1e-300)
    return (a * b).mean(0) * a.shape[0] / (a.shape[0] - 1)


def span_r2(targets: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Per column of ``targets``: variance explained by the span of ``basis`` and a constant."""
    design = torch.cat([basis, torch.ones_like(basis[:, :1])], dim=-1)
    solution = torch.linalg.lstsq(design, targets).solution
    residual = targets - design @ solution
    return 1.0 - residual.var(0) / targets.var(0)


def scores(values, functions, reference, held_out, kernel_held_out, mean_diagonal) -> dict:
    k = values.shape[0]
    ref_values, ref_functions = reference
    relative = (values / ref_values[:k] - 1).abs()
    approx = (functions * values) @ functions.T
    return {
        "sum/diag": float(values.sum() / mean_diagonal),
        "eig err med": float(relative.median()),
        "eig err max": float(relative.max()),
        "corr med": float(correlations(functions, ref_functions[:, :k]).abs().median()),
        "span R2": float(span_r2(ref_functions[:, :k], functions).mean()),
        "kernel err": float((approx - kernel_held_out).norm() / kernel_held_out.norm()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="training points NeuralEF samples from")
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--reference", type=int, default=4000, help="points of the dense eigh")
    parser.add_argument("--held-out", type=int, default=2000)
    parser.add_argument("--eigenfunctions", default="16,64")
    parser.add_argument("--steps", default="500,2000")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--ritz", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x, _ = make_data(args.n + args.held_out, args.dim, torch.float64, torch.device("cpu"), seed=args.seed)
    train, held_out = x[: args.n], x[args.n :]
    base = gp_ntk.NNGPKernel(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1).double()
    ks = [int(v) for v in args.eigenfunctions.split(",")]
    start = time.perf_counter()
    modes = spectral.eigenmodes(base, train[: args.reference], max(ks), method="dense")
    with torch.no_grad():
        reference = (modes.eigenvalues, modes(held_out))
        kernel_held_out = base(held_out).to_dense()
        mean_diagonal = float(base(train[:4000], diag=True).mean())
    print(
        f"reference: dense eigh on {args.reference} points ({time.perf_counter() - start:.0f} s); "
        f"mean k(x, x) {mean_diagonal:.4f}; top eigenvalues "
        + ", ".join(f"{float(v):.4g}" for v in modes.eigenvalues[:10]),
        flush=True,
    )
    for k in ks:
        rank_k = (reference[1][:, :k] * reference[0][:k]) @ reference[1][:, :k].T
        optimum = float((rank_k - kernel_held_out).norm() / kernel_held_out.norm())
        print(
            f"\nk = {k}: reference top-k sum/diag {float(reference[0][:k].sum()) / mean_diagonal:.3f}, "
            f"kernel err of the rank-k reference {optimum:.3f}"
        )
        print(
            "| steps | eigenvalues | sum/diag | eig err med | eig err max | corr med | span R2 | kernel err | s |"
        )
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for steps in [int(v) for v in args.steps.split(",")]:
            start = time.perf_counter()
            nef = spectral.NeuralEigenfunctions(base, k, hidden_features=args.hidden).fit(
                train, steps=steps, batch_size=args.batch, lr=args.lr, seed=args.seed, ritz_points=0
            )
            seconds = time.perf_counter() - start
            with torch.no_grad():
                rows = {
                    "moving average": scores(
                        nef.eigenvalues, nef(held_out), reference, held_out, kernel_held_out, mean_diagonal
                    )
                }
                nef.rayleigh_ritz(train[: args.ritz])
                rows["Rayleigh-Ritz"] = scores(
                    nef.eigenvalues, nef(held_out), reference, held_out, kernel_held_out, mean_diagonal
                )
            for name, row in rows.items():
                print(
                    f"| {steps} | {name} | "
                    + " | ".join(f"{v:.3f}" for v in row.values())
                    + f" | {seconds:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
