"""UncentredInputWarning: a dot-product kernel fed inputs that all lie in [0, 1]^d warns once per
process, with the fix; centred inputs, cross-covariances, evaluation mode and d = 1 never warn."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import torch
from gpytorch.kernels import ScaleKernel

import gp_ntk
from gp_ntk.kernels import _contract

DTYPE = torch.float64


@pytest.fixture(autouse=True)
def fresh_warning_state() -> Iterator[None]:
    _contract.reset_uncentred_warning()
    yield
    _contract.reset_uncentred_warning()


def _unit_box(n: int = 12, d: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


@pytest.mark.parametrize(
    "kernel",
    [gp_ntk.NNGPKernel(depth=3), gp_ntk.NTKKernel(depth=2), gp_ntk.ArcCosineKernel(), gp_ntk.ErfKernel()],
    ids=["nngp", "ntk", "arccos", "erf"],
)
def test_inputs_in_the_unit_box_warn_once_with_the_fix(kernel) -> None:
    x = _unit_box()
    with pytest.warns(gp_ntk.UncentredInputWarning, match=r"CenteredNormalize.*x - 0\.5") as record:
        ScaleKernel(kernel).double()(x).to_dense()
    assert len(record) == 1 and record[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error", gp_ntk.UncentredInputWarning)
        ScaleKernel(kernel).double()(_unit_box(seed=1)).to_dense()  # not twice


def test_centred_inputs_cross_covariances_and_evaluation_mode_do_not_warn() -> None:
    kernel = gp_ntk.NNGPKernel(depth=3).double()
    x = _unit_box()
    with warnings.catch_warnings():
        warnings.simplefilter("error", gp_ntk.UncentredInputWarning)
        kernel(2 * x - 1).to_dense()
        kernel(x, _unit_box(seed=1)).to_dense()  # a cross-covariance is not checked
        kernel(x[:1]).to_dense()  # one point
        kernel(x[:, :1]).to_dense()  # one feature
        kernel.eval()
        kernel(x).to_dense()
    assert not _contract._uncentred_warned
    kernel.train()
    with pytest.warns(gp_ntk.UncentredInputWarning):
        kernel(x).to_dense()


def test_the_warning_is_filterable_by_category_and_exported_from_bo() -> None:
    import gp_ntk.bo as bo

    assert bo.UncentredInputWarning is gp_ntk.UncentredInputWarning
    assert issubclass(gp_ntk.UncentredInputWarning, UserWarning)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=gp_ntk.UncentredInputWarning)
        gp_ntk.NTKKernel(depth=2).double()(_unit_box()).to_dense()
    assert not [w for w in record if issubclass(w.category, gp_ntk.UncentredInputWarning)]


def test_one_line_botorch_path_with_normalize_warns_and_make_bo_model_does_not() -> None:
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.input import Normalize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    import gp_ntk.bo as bo

    X = 5 * _unit_box(10, 4) - 2  # original units, box [-2, 3]^4
    Y = X.sin().sum(-1, keepdim=True)
    bounds = torch.stack([torch.full((4,), -2.0), torch.full((4,), 3.0)]).to(DTYPE)
    with warnings.catch_warnings():
        warnings.simplefilter("error", gp_ntk.UncentredInputWarning)
        model = bo.make_bo_model(X, Y, bounds)
        bo.fit_bo_model(model)
    one_line = SingleTaskGP(
        X,
        Y,
        covar_module=ScaleKernel(gp_ntk.NNGPKernel(depth=3)),
        input_transform=Normalize(4, bounds=bounds),
    )
    with pytest.warns(gp_ntk.UncentredInputWarning, match="NNGPKernel") as record:
        fit_gpytorch_mll(ExactMarginalLogLikelihood(one_line.likelihood, one_line))
    assert len([w for w in record if issubclass(w.category, gp_ntk.UncentredInputWarning)]) == 1


def test_no_check_while_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", gp_ntk.UncentredInputWarning)
        kernel = gp_ntk.NNGPKernel(depth=2).double()
        x = _unit_box()
        assert not _contract.warn_if_uncentred(kernel, x, x)
