"""Trained-ensemble predictions: gp_ntk.dynamics against neural-tangents' jitted predict module.

Both sides get the same precomputed NNGP and NTK matrices (n training, m test points) and
predict the ``"ntk"`` ensemble's mean and covariance at 10 times (one call with a vector of
times), in float64 on one CPU thread. Each side runs in a fresh subprocess; the table gives the
wall time of the first call (neural-tangents: including jit compilation) and of a second call,
the peak resident memory above the process's size once the matrices are loaded, the number of
non-finite outputs and the largest difference between the two sides. A second row uses a
training set with a repeated point (an exactly singular kernel, ``diag_reg=0``).

Run ``python benchmarks/dynamics.py`` (n = m = 2000) or ``--quick`` (n = m = 300); the
neural-tangents side needs a Python with JAX and neural-tangents (``--nt-python``, default the
``GP_NTK_NT_PYTHON`` environment variable) and is skipped without one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gp_ntk  # noqa: E402

SINGLE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "JAX_PLATFORMS": "cpu",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}

_COMMON = r"""
import json, resource, sys, time
import numpy as np
folder = sys.argv[1]
load = lambda name: np.load(f"{folder}/{name}.npy")
names = ("nngp_dd", "ntk_dd", "nngp_td", "ntk_td", "nngp_tt", "y", "times")
data = {k: load(k) for k in names}
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

_OURS = (
    _COMMON
    + r"""
import torch
torch.set_num_threads(1)
from gp_ntk import dynamics
m = {k: torch.from_numpy(v) for k, v in data.items()}
base = rss_mb()
rows = []
for attempt in range(2):
    start = time.perf_counter()
    predict = dynamics.ensemble_from_matrices(m["nngp_dd"], m["ntk_dd"], m["y"])
    out = predict(m["times"], "ntk", nngp_test_train=m["nngp_td"], ntk_test_train=m["ntk_td"], nngp_test_test=m["nngp_tt"])
    rows.append(time.perf_counter() - start)
np.save(f"{folder}/ours_mean.npy", out.mean.numpy()); np.save(f"{folder}/ours_cov.npy", out.covariance.numpy())
bad = int((~torch.isfinite(out.mean)).sum() + (~torch.isfinite(out.covariance)).sum())
print(json.dumps({"first": rows[0], "second": rows[1], "peak_mb": peak_mb() - base, "nonfinite": bad}))
"""
)

_NEURAL_TANGENTS = (
    _COMMON
    + r"""
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
from collections import namedtuple
from neural_tangents import predict
n, m = data["nngp_td"].shape[1], data["nngp_td"].shape[0]
# the NTK test-test block is never read by the "ntk" regime: zeros keep the joint matrix square
tt = {"nngp": data["nngp_tt"], "ntk": np.zeros((m, m))}
full = {g: jnp.asarray(np.block([[data[g + "_dd"], data[g + "_td"].T], [data[g + "_td"], tt[g]]])) for g in ("nngp", "ntk")}
Kernel = namedtuple("Kernel", "nngp ntk")
def kernel_fn(x1, x2, get):  # inputs are indices into the joint train + test matrices
    i = x1[:, 0].astype(jnp.int32)
    j = i if x2 is None else x2[:, 0].astype(jnp.int32)
    pick = lambda g: full[g][i][:, j]
    return pick(get) if isinstance(get, str) else Kernel(*(pick(g) if g in get else None for g in Kernel._fields))
x_train = jnp.arange(n, dtype=jnp.float64)[:, None]
x_test = (n + jnp.arange(m, dtype=jnp.float64))[:, None]
y = jnp.asarray(data["y"])[:, None]
times = jnp.asarray(data["times"])
base = rss_mb()
run = jax.jit(lambda t: predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y)(t, x_test, "ntk", True))
rows = []
for attempt in range(2):
    start = time.perf_counter()
    out = run(times)
    out.covariance.block_until_ready()
    rows.append(time.perf_counter() - start)
mean, cov = np.asarray(out.mean)[..., 0], np.asarray(out.covariance)
np.save(f"{folder}/nt_mean.npy", mean); np.save(f"{folder}/nt_cov.npy", cov)
bad = int((~np.isfinite(mean)).sum() + (~np.isfinite(cov)).sum())
print(json.dumps({"first": rows[0], "second": rows[1], "peak_mb": peak_mb() - base, "nonfinite": bad}))
"""
)


def make_matrices(folder: Path, n: int, m: int, num_times: int, repeat_point: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    kernel = gp_ntk.NTKKernel(depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1).double()
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    if repeat_point:
        x[-1] = x[0]
    xs = torch.randn(m, 3, generator=gen, dtype=torch.float64)
    y = torch.sin(x.sum(-1))
    with torch.no_grad():
        nngp_dd, ntk_dd = kernel.nngp_and_ntk(x, x)
        nngp_td, ntk_td = kernel.nngp_and_ntk(xs, x)
        nngp_tt = kernel.nngp_and_ntk(xs, xs, compute_ntk=False)[0]
    times = torch.logspace(-1, 4, num_times, dtype=torch.float64)
    for name, value in dict(
        nngp_dd=nngp_dd, ntk_dd=ntk_dd, nngp_td=nngp_td, ntk_td=ntk_td, nngp_tt=nngp_tt, y=y, times=times
    ).items():
        np.save(folder / f"{name}.npy", value.numpy())


def run_side(python: str, program: str, folder: Path) -> dict | None:
    env = {**os.environ, **SINGLE_THREAD, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [python, "-c", program, str(folder)], capture_output=True, text=True, env=env, timeout=3600
    )
    if result.returncode != 0:
        print(
            f"  [{python} failed: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else '?'}]"
        )
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(quick: bool = False, nt_python: str = "") -> list[dict]:
    n = m = 300 if quick else 2000
    num_times = 3 if quick else 10
    have_nt = bool(nt_python) and Path(nt_python).exists()
    rows = []
    for case, repeat in (("generic", False), ("repeated point", True)):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            make_matrices(folder, n, m, num_times, repeat)
            ours = run_side(sys.executable, _OURS, folder)
            theirs = run_side(nt_python, _NEURAL_TANGENTS, folder) if have_nt else None
            difference = None
            if ours and theirs:
                scale = np.abs(np.load(folder / "nt_cov.npy")).max()
                with np.errstate(invalid="ignore"):
                    difference = (
                        max(
                            float(
                                np.nanmax(
                                    np.abs(
                                        np.load(folder / "ours_mean.npy") - np.load(folder / "nt_mean.npy")
                                    )
                                )
                            ),
                            float(
                                np.nanmax(
                                    np.abs(np.load(folder / "ours_cov.npy") - np.load(folder / "nt_cov.npy"))
                                )
                            ),
                        )
                        / scale
                    )
            for name, side in (("gp_ntk.dynamics", ours), ("neural-tangents (jit)", theirs)):
                if side is not None:
                    rows.append({"case": case, "library": name, **side, "max_rel_diff": difference})
    print(
        f"\nn = {n} training, m = {m} test points, {num_times} times, get='ntk', mean + covariance, float64, 1 thread"
    )
    print(
        f"{'case':<16}{'library':<24}{'first s':>9}{'second s':>10}{'peak MB':>10}{'non-finite':>12}{'max rel diff':>14}"
    )
    for r in rows:
        diff = "-" if r["max_rel_diff"] is None else f"{r['max_rel_diff']:.1e}"
        print(
            f"{r['case']:<16}{r['library']:<24}{r['first']:>9.2f}{r['second']:>10.2f}{r['peak_mb']:>10.0f}"
            f"{r['nonfinite']:>12d}{diff:>14}"
        )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = m = 300, 3 times")
    parser.add_argument(
        "--nt-python",
        default=os.environ.get("GP_NTK_NT_PYTHON", ""),
        help="a Python with JAX and neural-tangents (default: $GP_NTK_NT_PYTHON)",
    )
    args = parser.parse_args()
    main(args.quick, args.nt_python)
