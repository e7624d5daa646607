"""The example scripts run end to end in their quick mode and write readable outputs."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")
pytest.importorskip("tqdm")


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (the examples folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"gp_ntk_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


@pytest.fixture(autouse=True)
def restore_torch_state() -> Iterator[None]:
    """The examples set the thread count and seed for the whole process: undo that afterwards."""
    threads = torch.get_num_threads()
    rng = torch.get_rng_state()
    yield
    torch.set_num_threads(threads)
    torch.set_rng_state(rng)


def assert_pngs(directory: Path, names: list[str]) -> None:
    """Every named PNG exists, is non-empty and starts with the PNG signature."""
    for name in names:
        path = directory / name
        assert path.is_file(), f"{name} was not written"
        data = path.read_bytes()
        assert len(data) > 1000, f"{name} is suspiciously small ({len(data)} bytes)"
        assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG"


@pytest.mark.slow
def test_demo_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = load_example("demo")
    demo.main(["--quick", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out

    assert_pngs(
        tmp_path,
        ["kernel_vs_angle.png", "predicted_vs_true.png", "training_curves.png", "model_selection.png"],
    )
    # the main table: one row per kernel, with the metric columns
    for column in ("train LML/pt", "test RMSE", "test NLL", "cov95", "fit time"):
        assert column in out
    for name in ("NTK relu d3", "NNGP relu d3", "RBF ARD"):
        assert any(line.startswith(name) for line in out.splitlines()), f"no table row for {name}"
    # the model-selection table of gp_ntk.selection.format_table, every candidate of the quick grid
    assert "log ML" in out and "vs best" in out
    for name in ("nngp-relu-d1", "nngp-relu-d3", "ntk-relu-d1", "ntk-relu-d3", "rbf"):
        assert any(line.startswith(name) for line in out.splitlines()), f"no selection row for {name}"
    assert "failed" not in out


@pytest.mark.slow
def test_regression_1d_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = load_example("regression_1d")
    example.main(["--quick", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out

    assert_pngs(tmp_path, ["regression_1d.png", "prior_draws.png", "kernel_vs_angle_families.png"])
    for column in ("train LML/pt", "RMSE gap", "RMSE extrap"):
        assert column in out
    for name in ("NTK relu d3", "NNGP relu d3", "NNGP erf d3", "RBF"):
        assert any(line.startswith(name) for line in out.splitlines()), f"no table row for {name}"


@pytest.mark.slow
def test_ensemble_bo_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = load_example("ensemble_bo")
    example.main(["--quick", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert_pngs(tmp_path, ["ensemble_bo_regret.png", "ensemble_bo_posterior.png"])
    for name in ("t = 10", "t = 1000", "t = inf"):
        assert f"{name} " in out


def test_regression_1d_data_has_the_gap() -> None:
    example = load_example("regression_1d")
    data = example.make_data(num_grid=50)
    gap_lo, gap_hi = example.GAP
    lo, hi = example.TRAIN_RANGE
    assert data.train_x.shape == (example.NUM_TRAIN,)
    assert not ((data.train_x > gap_lo) & (data.train_x < gap_hi)).any()
    assert data.train_x.min() >= lo and data.train_x.max() <= hi
    # points on both sides of the gap
    assert (data.train_x < gap_lo).any() and (data.train_x > gap_hi).any()


def test_prior_draws_are_reproducible_and_finite() -> None:
    example = load_example("regression_1d")
    x = torch.linspace(-3.0, 3.0, 40, dtype=torch.float64).unsqueeze(-1)
    kernel = example.FAMILIES["ReLU NTK"](2, 0.5).to(torch.float64)
    first = example.prior_draws(kernel, x, num_draws=3)
    second = example.prior_draws(kernel, x, num_draws=3)
    assert first.shape == (3, 40)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)


@pytest.mark.slow
def test_readout_free_ntk_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = load_example("readout_free_ntk")
    values = example.main(["--quick", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert_pngs(tmp_path, ["readout_free_ntk.png"])
    assert "erf W_std=1" in out and "relu depth=3" in out
    # a depth-1 bias-free ReLU network without read-out on the unit circle in d = 2:
    # Theta = (pi - theta) / (2 pi) * cos(theta), 1/2 at theta = 0 and 0 at theta = pi / 2
    relu = values["relu depth=1"]
    assert abs(float(relu[0]) - 0.5) < 1e-14 and abs(float(relu[len(relu) // 2])) < 1e-14
