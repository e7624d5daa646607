#!/usr/bin/env python
"""Every named activation's NNGP and NTK against neural-tangents' ``stax`` ``kernel_fn``, float64.

For each example of each registered activation that names a ``stax`` layer
(``Activation.stax_layer``), depths 1-3, the NTK and the standard parameterization, with and
without biases, it builds

    stax.serial(*[Dense(width, W_std, b_std), layer] * depth, Dense(1, W_std, b_std))

and the matching ``gp_ntk.NTKKernel``, evaluates both on the same inputs (``k(X, X)`` and
``k(X, Y)``) and prints the largest error relative to the largest entry of the matrix.
neural-tangents is not a dependency of gp_ntk: run this with a Python that has JAX and
neural-tangents next to torch (see ``benchmarks/neural_tangents_compare.py``)::

    python benchmarks/stax_parity.py            # all cases
    python benchmarks/stax_parity.py --quick    # depth 1 and 3, NTK parameterization only
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

WEIGHT_VARIANCE = 0.8
BIAS_VARIANCE = 0.2
WIDTH = 64  # enters the standard parameterization's NTK


@dataclass
class Row:
    activation: str
    depth: int
    parameterization: str
    bias: bool
    nngp_error: float
    ntk_error: float
    note: str = ""


def _inputs(num: int, dim: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.standard_normal((num, dim)), rng.standard_normal((num - 1, dim))


def compare(activation, depth: int, parameterization: str, bias: bool, x1, x2) -> tuple[float, float, str]:
    """Largest relative errors (NNGP, NTK) of gp_ntk against neural-tangents for one network, and a
    note: ``"overflow"`` where gp_ntk refused a result beyond float64 and neural-tangents' is not
    finite either (errors are then NaN), ``"overflow, finite in stax"`` where they disagree."""
    import torch
    from neural_tangents import stax

    import gp_ntk

    name, kwargs = activation.stax_layer()
    b_std = BIAS_VARIANCE**0.5 if bias else None
    dense = dict(W_std=WEIGHT_VARIANCE**0.5, b_std=b_std, parameterization=parameterization)
    layers = [stax.Dense(WIDTH, **dense), getattr(stax, name)(**kwargs)] * depth
    _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, **dense))
    extra = {"width": WIDTH} if parameterization == "standard" else {}
    # built in float64 from the start: a float32 parameter cast later holds the rounded values
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        kernel = _kernel(gp_ntk, activation, depth, parameterization, bias, extra)
    finally:
        torch.set_default_dtype(previous)
    return _errors(kernel, kernel_fn, x1, x2)


def _kernel(gp_ntk, activation, depth, parameterization, bias, extra):
    return gp_ntk.NTKKernel(
        depth,
        activation,
        weight_variance=WEIGHT_VARIANCE,
        bias_variance=BIAS_VARIANCE if bias else 0.0,
        parameterization=parameterization,
        **extra,
    )


def _errors(kernel, kernel_fn, x1, x2) -> tuple[float, float, str]:
    import jax.numpy as jnp
    import numpy as np
    import torch

    worst_nngp = worst_ntk = 0.0
    for left, right in ((x1, None), (x1, x2)):
        theirs = kernel_fn(jnp.asarray(left), None if right is None else jnp.asarray(right), ("nngp", "ntk"))
        t1 = torch.as_tensor(left)
        t2 = t1 if right is None else torch.as_tensor(right)
        with torch.no_grad():
            try:
                nngp, ntk = kernel.nngp_and_ntk(t1, t2)
            except FloatingPointError:
                finite = bool(
                    np.isfinite(np.asarray(theirs.nngp)).all() and np.isfinite(np.asarray(theirs.ntk)).all()
                )
                return float("nan"), float("nan"), "overflow, finite in stax" if finite else "overflow"
        for ours, reference, slot in ((nngp, theirs.nngp, 0), (ntk, theirs.ntk, 1)):
            reference = np.asarray(reference)
            error = float(np.max(np.abs(ours.numpy() - reference)) / max(np.max(np.abs(reference)), 1e-300))
            if slot == 0:
                worst_nngp = max(worst_nngp, error)
            else:
                worst_ntk = max(worst_ntk, error)
    return worst_nngp, worst_ntk, ""


def cases(quick: bool):
    from gp_ntk.activations import activation_examples

    depths = (1, 3) if quick else (1, 2, 3)
    parameterizations = ("ntk",) if quick else ("ntk", "standard")
    for activation in activation_examples():
        if activation.stax_layer() is None:
            continue
        for depth in depths:
            for parameterization in parameterizations:
                for bias in (True, False):
                    yield activation, depth, parameterization, bias


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="depths 1 and 3, NTK parameterization")
    parser.add_argument("--num", type=int, default=6, help="points in X (Y has one fewer)")
    parser.add_argument("--dim", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        import jax
        import neural_tangents  # noqa: F401
    except ImportError as error:
        sys.exit(f"this script needs neural-tangents and jax ({error}); see the module docstring")
    jax.config.update("jax_enable_x64", True)
    x1, x2 = _inputs(args.num, args.dim)
    rows = []
    for activation, depth, parameterization, bias in cases(args.quick):
        rows.append(
            Row(
                repr(activation),
                depth,
                parameterization,
                bias,
                *compare(activation, depth, parameterization, bias, x1, x2),
            )
        )
    print(
        f"{'activation':40s} {'depth':>5s} {'param':>8s} {'bias':>5s} {'nngp rel err':>12s} {'ntk rel err':>12s}"
    )
    for row in rows:
        print(
            f"{row.activation:40s} {row.depth:5d} {row.parameterization:>8s} {str(row.bias):>5s} "
            f"{row.nngp_error:12.2e} {row.ntk_error:12.2e} {row.note}"
        )
    by_activation: dict[str, list[float]] = {}
    for row in rows:
        errors = by_activation.setdefault(row.activation, [])
        if not row.note:
            errors.append(max(row.nngp_error, row.ntk_error))
    print("\nmax over depths, parameterizations and biases (cases that overflow in both left out):")
    for name, errors in by_activation.items():
        print(f"  {name:40s} {max(errors, default=float('nan')):.2e}")
    compared = [max(r.nngp_error, r.ntk_error) for r in rows if not r.note]
    print(f"overall max relative error: {max(compared):.2e} over {len(compared)} networks")
    disagreements = [r for r in rows if r.note == "overflow, finite in stax"]
    print(f"refused as overflow where stax is finite: {len(disagreements)}")
    return rows


if __name__ == "__main__":
    main()
