#!/usr/bin/env python
"""gp_ntk against neural-tangents' jitted ``kernel_fn`` (XLA-fused) on the same inputs, one process.

neural-tangents is not a dependency of gp_ntk. Run this script with a Python that has JAX and
neural-tangents installed next to torch and gp_ntk, e.g. a scratch virtual environment made
with ``--system-site-packages`` on top of the one gp_ntk lives in::

    python -m venv --system-site-packages /tmp/nt-venv
    /tmp/nt-venv/bin/pip install neural-tangents "jax[cpu]"
    /tmp/nt-venv/bin/python benchmarks/neural_tangents_compare.py              # N = 1000 ... 8000
    /tmp/nt-venv/bin/python benchmarks/neural_tangents_compare.py --quick

For each N and dtype it times (median of ``--repeats`` after a warm-up that includes XLA's
compilation) the NNGP alone and NNGP + NTK together of the depth-3 ReLU network
``stax.serial(*[Dense(w, W_std, b_std), Relu()] * 3, Dense(1, W_std, b_std))`` in both
libraries, checks that the matrices agree, and prints the time ratios. Both libraries run on
``--threads`` CPU threads (XLA's through ``XLA_FLAGS``, set before JAX is imported).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time


def _median(fn, repeats: int) -> float:
    fn()  # warm-up: XLA compilation, torch.compile of large blocks, thread pools
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000, 8000])
    parser.add_argument("--dtypes", nargs="+", choices=("float64", "float32"), default=["float64", "float32"])
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="N = 500, float64, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.dtypes, args.repeats = [500], ["float64"], 1
    if args.threads == 1:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import jax
        import neural_tangents as nt
        from neural_tangents import stax
    except ImportError as error:
        sys.exit(f"this benchmark needs neural-tangents and jax ({error}); see the module docstring")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import torch

    import gp_ntk

    torch.set_num_threads(args.threads)
    weight_variance, bias_variance = 2.0, 0.1
    layers = [stax.Dense(512, W_std=weight_variance**0.5, b_std=bias_variance**0.5), stax.Relu()] * args.depth
    _, _, kernel_fn = stax.serial(
        *layers, stax.Dense(1, W_std=weight_variance**0.5, b_std=bias_variance**0.5)
    )
    nt_nngp = jax.jit(lambda x: kernel_fn(x, None, "nngp"))
    nt_both = jax.jit(lambda x: kernel_fn(x, None, ("nngp", "ntk")))
    ntk = gp_ntk.NTKKernel(args.depth, "relu", weight_variance=weight_variance, bias_variance=bias_variance)
    nngp = gp_ntk.NNGPKernel(args.depth, "relu", weight_variance=weight_variance, bias_variance=bias_variance)

    print(
        f"{dt.datetime.now():%Y-%m-%d %H:%M}, {platform.system()} {platform.machine()}, {os.cpu_count()} cores,"
        f" {args.threads} thread(s); torch {torch.__version__}, gp_ntk {gp_ntk.__version__},"
        f" neural-tangents {nt.__version__}, jax {jax.__version__};"
        f" d = {args.dim}, depth {args.depth} ReLU, median of {args.repeats} after a warm-up"
    )
    rows = []
    for dtype_name in args.dtypes:
        for n in args.sizes:
            generator = torch.Generator().manual_seed(n)
            x_torch = torch.randn(n, args.dim, dtype=getattr(torch, dtype_name), generator=generator)
            x_jax = jnp.asarray(x_torch.numpy())
            for kernel in (nngp, ntk):
                kernel.to(x_torch)
                # set after the dtype change: values set at construction went through a float32
                # parameter and would be off by about 1e-8 in float64
                kernel.weight_variance, kernel.bias_variance = weight_variance, bias_variance

            def ours_nngp():
                with torch.no_grad():
                    return nngp(x_torch).to_dense()

            def ours_both():
                with torch.no_grad():
                    return ntk.nngp_and_ntk(x_torch, x_torch)

            times = {
                "nt_nngp": _median(lambda: nt_nngp(x_jax).block_until_ready(), args.repeats),
                "ours_nngp": _median(ours_nngp, args.repeats),
                "nt_both": _median(lambda: jax.block_until_ready(nt_both(x_jax)), args.repeats),
                "ours_both": _median(ours_both, args.repeats),
            }
            reference_nngp, reference_ntk = (np.asarray(m) for m in nt_both(x_jax))
            our_nngp, our_ntk = (m.numpy() for m in ours_both())
            difference = max(
                float(np.abs(our_nngp - reference_nngp).max() / np.abs(reference_nngp).max()),
                float(np.abs(our_ntk - reference_ntk).max() / np.abs(reference_ntk).max()),
            )
            rows.append({"dtype": dtype_name, "n": n, "max_relative_difference": difference, **times})
            print(f"  {dtype_name} N={n}: {times}", file=sys.stderr, flush=True)
    print(
        "\n| dtype | N | NNGP: neural-tangents [s] | gp_ntk [s] | speed-up |"
        " NNGP+NTK: neural-tangents [s] | gp_ntk [s] | speed-up | max rel. difference |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['dtype']} | {r['n']} | {r['nt_nngp']:.3f} | {r['ours_nngp']:.3f} |"
            f" {r['nt_nngp'] / r['ours_nngp']:.1f}x | {r['nt_both']:.3f} | {r['ours_both']:.3f} |"
            f" {r['nt_both'] / r['ours_both']:.1f}x | {r['max_relative_difference']:.1e} |"
        )
    print("\nspeed-up: neural-tangents' time / gp_ntk's time (above 1: gp_ntk faster).")
    return rows


if __name__ == "__main__":
    main()
