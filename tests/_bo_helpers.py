"""Data, boxes, kernels and the RNG fixture shared by the BO test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import gp_ntk

DTYPE = torch.float64
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def single_thread_and_rng() -> Iterator[None]:
    """Keep the suite's thread count and global RNG as they were (the examples change both)."""
    threads = torch.get_num_threads()
    rng = torch.get_rng_state()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_rng_state(rng)


def _data(
    n: int = 10, d: int = 3, seed: int = 0, dtype: torch.dtype = DTYPE
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=generator, dtype=dtype)
    Y = torch.sin(4 * X).sum(-1, keepdim=True) + 0.3 * X[:, :1] ** 2
    return X, Y


def _unit_bounds(d: int, dtype: torch.dtype = DTYPE) -> torch.Tensor:
    return torch.stack([torch.zeros(d, dtype=dtype), torch.ones(d, dtype=dtype)])


PLAIN_KERNELS = {
    "ntk": lambda d: gp_ntk.NTKKernel(depth=2, activation="relu", weight_variance=2.0, bias_variance=0.1),
    "nngp-relu": lambda d: gp_ntk.NNGPKernel(
        depth=3, activation="relu", weight_variance=2.0, bias_variance=0.1
    ),
    "nngp-erf": lambda d: gp_ntk.NNGPKernel(
        depth=2, activation="erf", weight_variance=2.0, bias_variance=0.1
    ),
    "arccos": lambda d: gp_ntk.ArcCosineKernel(order=1, num_layers=2, weight_variance=1.0, bias_variance=0.1),
    "erf": lambda d: gp_ntk.ErfKernel(weight_variance=1.0, bias_variance=0.1, ard_num_dims=d),
}
