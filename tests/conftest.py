from __future__ import annotations

import pytest
import torch


@pytest.fixture
def float64_default():
    """Build kernels in float64, so hyperparameters hold their nominal values to 1e-16.

    (A kernel built in float32 and cast with ``.double()`` keeps float32-rounded variances.)
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
