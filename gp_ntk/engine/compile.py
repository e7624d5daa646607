"""Compiled evaluation of kernel blocks: one ``torch.compile`` graph per kernel structure.

A kernel hands :func:`run_block` a block function of its own (``kernel._block``); this module
knows nothing about the recursion inside it, only how to compile it and when to give up.
"""

from __future__ import annotations

import functools
import warnings
from typing import Protocol

import torch
from torch import Tensor

from .. import settings
from .blocks import Side

__all__ = ["BlockKernel", "run_block"]


class BlockKernel(Protocol):
    """What :func:`run_block` evaluates: a kernel's matrices between two sides."""

    def _block(
        self, side1: Side, side2: Side, outputs: str, variances: dict[str, Tensor]
    ) -> tuple[Tensor, ...]: ...


def _block_outputs(kernel: BlockKernel, side1: Side, side2: Side, outputs: str, **variances: Tensor):
    """The matrices of one block (see :meth:`gp_ntk.kernels.base.VarianceKernel._block`)."""
    return kernel._block(side1, side2, outputs, variances)


_MAX_COMPILED_GRAPHS = 256


@functools.cache
def _compiled_block_outputs():
    # one compiled function for all kernels: dynamo guards on the kernel's type and structure
    # (depth, activation), on ``outputs`` and on the sides' zero flags, and keeps one graph per
    # configuration; shapes are dynamic, so the blocks of all sizes share it.
    # realize_reads_threshold=1: a layer's covariance feeds both the next layer and the NTK, and
    # inductor would otherwise inline (recompute) the whole chain of earlier layers into each
    # reader, so that the cost of NNGP+NTK grew quadratically with depth (measured: depth 10
    # three times slower); storing every intermediate that has more than one reader keeps it
    # linear, and a block's intermediates stay in cache.
    return torch.compile(_block_outputs, dynamic=True, options={"realize_reads_threshold": 1})


def run_block(
    kernel: BlockKernel,
    side1: Side,
    side2: Side,
    outputs: str,
    compiled: bool,
    variances: dict[str, Tensor],
) -> tuple[Tensor, ...]:
    """``kernel._block(side1, side2, outputs, variances)``, compiled where ``compiled`` asks for it.

    Falls back to eager evaluation for the rest of the program (with a warning) where
    ``torch.compile`` is unavailable or fails.
    """
    if compiled and not settings.compile_kernels._broken:
        try:
            # Every structure (kernel type, depth, activation), output set, dtype, grad mode and
            # symmetric/cross block is one graph of this one function: more than dynamo's
            # default of 8 graphs per function in any program that uses a few kernels.
            # (a compiled block searches for identical points unconditionally: a side's group
            # object would only make dynamo guard on it)
            symmetric = side2 is side1
            side1 = side1._replace(group=None)
            side2 = side1 if symmetric else side2._replace(group=None)
            with torch._dynamo.config.patch(recompile_limit=_MAX_COMPILED_GRAPHS):
                return _compiled_block_outputs()(kernel, side1, side2, outputs, **variances)
        except Exception as error:  # no compiler, unsupported op: eager from now on
            settings.compile_kernels._broken = True
            warnings.warn(
                f"torch.compile is unavailable here ({type(error).__name__}: {str(error)[:200]}); "
                "gp_ntk evaluates kernels eagerly from now on",
                RuntimeWarning,
                stacklevel=3,
            )
    return kernel._block(side1, side2, outputs, variances)
