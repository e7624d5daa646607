"""gp_ntk.bo.loop: run_bo recovers from every fault it can and keeps every evaluation otherwise;
the BO example and benchmark smoke runs.

Runs with tiny budgets (a few points, 2 restarts): what is checked is that every piece works and
recovers, not how well BO optimises; that is measured by ``benchmarks/bo.py``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from _bo_helpers import DTYPE, PLAIN_KERNELS, ROOT, _data, _unit_bounds, single_thread_and_rng  # noqa: F401
from botorch.fit import fit_gpytorch_mll
from botorch.test_functions import Branin
from linear_operator.utils.errors import NotPSDError

import gp_ntk.bo as bo


def _branin():
    return Branin(negate=True).to(DTYPE)


SMALL = {"num_restarts": 2, "raw_samples": 16, "progress": False}


@pytest.mark.slow
def test_run_bo_runs_reproducibly_within_bounds() -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)
    first = bo.run_bo(problem, bounds, 10, num_initial=5, batch_size=2, **SMALL)
    second = bo.run_bo(problem, bounds, 10, num_initial=5, batch_size=2, **SMALL)
    assert first.X.shape == (10, 2) and first.Y.shape == (10,)
    assert first.iteration.tolist() == [0] * 5 + [1, 1, 2, 2, 3]  # the last batch is cut to the budget
    assert torch.equal(first.X, second.X)
    assert ((first.X >= bounds[0]) & (first.X <= bounds[1])).all()
    assert torch.isfinite(first.Y).all() and not first.events
    assert len(first.iteration_seconds) == len(first.fit_seconds) == len(first.acquisition_seconds) == 3
    best = first.best_values
    assert (best[1:] >= best[:-1]).all() and first.best_value == float(first.Y.max())
    torch.testing.assert_close(problem(first.best_X.unsqueeze(0)).squeeze(), first.Y.max())
    with pytest.raises(ValueError, match="kind must be one of"):
        first.events_of("nan")


@pytest.mark.slow
def test_run_bo_with_ucb_random_and_custom_surrogates() -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)
    calls = []
    ucb = bo.run_bo(problem, bounds, 7, num_initial=5, surrogate="nngp", acquisition="qucb", **SMALL)
    random = bo.run_bo(problem, bounds, 7, num_initial=5, surrogate="random", **SMALL)
    custom = bo.run_bo(
        problem,
        bounds,
        7,
        num_initial=5,
        surrogate=lambda X, Y, b: bo.make_bo_model(X, Y, b, "ntk", depth=1),
        callback=lambda iteration, result: calls.append((iteration, result.X.shape[0])),
        **SMALL,
    )
    for result in (ucb, random, custom):
        assert result.X.shape == (7, 2) and torch.isfinite(result.Y).all()
    # the same Sobol initial design, then different proposals
    assert torch.equal(ucb.X[:5], random.X[:5])
    assert random.fit_seconds == [0.0, 0.0]
    assert calls == [(1, 6), (2, 7)]


@pytest.mark.slow
def test_run_bo_skips_nan_objective_values() -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)
    calls = {"n": 0}

    def flaky(X: torch.Tensor) -> torch.Tensor:
        values = problem(X)
        calls["n"] += 1
        return torch.full_like(values, math.nan) if calls["n"] in (2, 3) else values

    result = bo.run_bo(flaky, bounds, 10, num_initial=5, **SMALL)
    assert result.X.shape == (10, 2) and torch.isfinite(result.X).all()
    assert int(torch.isnan(result.Y).sum()) == 2
    assert len(result.events_of("nan_objective")) == 2
    assert math.isfinite(result.best_value) and not torch.isnan(result.best_values[5:]).any()


@pytest.mark.slow
def test_run_bo_starts_over_randomly_when_the_whole_initial_design_fails() -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)
    calls = {"n": 0}

    def broken_at_first(X: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        values = problem(X)
        return torch.full_like(values, math.nan) if calls["n"] == 1 else values

    result = bo.run_bo(broken_at_first, bounds, 9, num_initial=4, **SMALL)
    assert torch.isnan(result.Y[:4]).all() and torch.isfinite(result.Y[4:]).all()
    assert [e.iteration for e in result.events_of("too_few_observations")] == [1, 2]
    assert math.isfinite(result.best_value)
    assert result.best_values[:4].eq(-math.inf).all()


def _replace_optimizer(monkeypatch, make_candidates):
    """Make run_bo's acquisition optimiser return ``make_candidates(bounds, q)``."""

    def fake_optimize_acqf(acq_function, bounds, q, **kwargs):
        return make_candidates(bounds, q), torch.zeros(())

    monkeypatch.setattr(bo.loop, "optimize_acqf", fake_optimize_acqf)


def test_run_bo_clamps_candidates_outside_the_bounds(monkeypatch) -> None:
    _replace_optimizer(
        monkeypatch, lambda bounds, q: (bounds[1] + 0.5 * (bounds[1] - bounds[0])).expand(q, -1)
    )
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)
    result = bo.run_bo(problem, bounds, 7, num_initial=5, **SMALL)
    assert ((result.X >= bounds[0]) & (result.X <= bounds[1])).all()
    events = result.events_of("out_of_bounds")
    assert events and "0.5 of the box width" in events[0].message
    # the clamped corner was evaluated once; proposed again, it is a repeat and replaced
    assert len(result.events_of("duplicate")) == 1
    assert torch.isfinite(result.Y).all()


def test_run_bo_replaces_nan_candidates(monkeypatch) -> None:
    _replace_optimizer(monkeypatch, lambda bounds, q: torch.full((q, bounds.shape[1]), math.nan, dtype=DTYPE))
    problem = _branin()
    result = bo.run_bo(problem, problem.bounds.to(DTYPE), 7, num_initial=5, **SMALL)
    assert torch.isfinite(result.X).all() and torch.isfinite(result.Y).all()
    assert len(result.events_of("nan_candidate")) == 2


def test_run_bo_replaces_repeated_candidates(monkeypatch) -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)
    first_point = {}

    def repeat_the_first_point(bounds, q):
        return first_point["x"].expand(q, -1).clone()

    def objective(X):
        first_point.setdefault("x", X[:1].clone())
        return problem(X)

    _replace_optimizer(monkeypatch, repeat_the_first_point)
    result = bo.run_bo(objective, bounds, 10, num_initial=5, batch_size=2, **SMALL)
    distinct = torch.unique(result.X, dim=0)
    assert distinct.shape[0] == result.X.shape[0]
    # every candidate repeats the first point: two in each of the two full batches, one in the last
    assert len(result.events_of("duplicate")) == 5


@pytest.mark.slow
def test_run_bo_refits_with_jitter_when_a_fit_fails_once(monkeypatch) -> None:
    calls = {"n": 0}

    def fails_on_second_call(mll, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise NotPSDError("injected failure")
        return fit_gpytorch_mll(mll, **kwargs)

    monkeypatch.setattr(bo.fitting, "fit_gpytorch_mll", fails_on_second_call)
    problem = _branin()
    result = bo.run_bo(problem, problem.bounds.to(DTYPE), 8, num_initial=5, **SMALL)
    retries = result.events_of("fit_retry")
    assert [e.iteration for e in retries] == [2]
    assert "jitter 1e-06" in retries[0].message and "NotPSDError" in retries[0].message
    assert not result.events_of("fit_failed")
    assert result.X.shape == (8, 2) and torch.isfinite(result.Y).all()


def test_run_bo_falls_back_to_random_points_when_fit_or_acquisition_keeps_failing(
    monkeypatch, caplog
) -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)

    def always_fails(mll, **kwargs):
        raise NotPSDError("injected failure")

    monkeypatch.setattr(bo.fitting, "fit_gpytorch_mll", always_fails)
    with caplog.at_level(logging.WARNING, logger="gp_ntk.bo"):
        result = bo.run_bo(problem, bounds, 7, num_initial=5, max_fit_attempts=2, **SMALL)
    assert len(result.events_of("fit_failed")) == 2
    assert "fit_failed" in caplog.text  # reported, not only recorded
    assert result.X.shape == (7, 2) and torch.isfinite(result.Y).all()
    monkeypatch.undo()

    def broken_optimizer(*args, **kwargs):
        raise RuntimeError("injected: acquisition optimisation diverged")

    monkeypatch.setattr(bo.loop, "optimize_acqf", broken_optimizer)
    result = bo.run_bo(problem, bounds, 7, num_initial=5, **SMALL)
    assert len(result.events_of("acquisition_failed")) == 2
    assert result.X.shape == (7, 2) and torch.isfinite(result.Y).all()


def test_run_bo_refuses_bad_arguments_by_name() -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)
    with pytest.raises(ValueError, match="initial_X has 1 row\\(s\\) outside the bounds"):
        bo.run_bo(problem, bounds, 5, initial_X=bounds[1:] + 1.0, **SMALL)
    with pytest.raises(ValueError, match="initial_X must be"):
        bo.run_bo(problem, bounds, 5, initial_X=torch.zeros(3, 5, dtype=DTYPE), **SMALL)
    with pytest.raises(ValueError, match="num_evaluations"):
        bo.run_bo(problem, bounds, 0, **SMALL)
    with pytest.raises(ValueError, match="surrogate must be"):
        bo.run_bo(problem, bounds, 5, surrogate="gbm", **SMALL)
    with pytest.raises(ValueError, match="acquisition must be"):
        bo.run_bo(problem, bounds, 5, acquisition="ei", **SMALL)
    with pytest.raises(ValueError, match="bounds: every lower bound must be below its upper bound"):
        bo.run_bo(problem, bounds.flip(0), 5, **SMALL)
    with pytest.raises(ValueError, match="ucb_beta"):
        bo.run_bo(problem, bounds, 5, ucb_beta=-1.0, **SMALL)


class _FailingObjective:
    """Branin, until call ``fail_on``, which returns ``bad`` (or raises it, if an exception)."""

    def __init__(self, fail_on: int, bad: object) -> None:
        self.problem, self.fail_on, self.bad, self.calls = _branin(), fail_on, bad, 0

    def __call__(self, X: torch.Tensor) -> object:
        self.calls += 1
        if self.calls == self.fail_on:
            if isinstance(self.bad, BaseException):
                raise self.bad
            return self.bad(X) if callable(self.bad) else self.bad
        return self.problem(X)


@pytest.mark.parametrize(
    ("bad", "cause", "message"),
    [
        (KeyError("simulator crashed"), KeyError, "simulator crashed"),
        (None, ValueError, "objective '_FailingObjective' returned None for 1 point\\(s\\); it must map"),
        (lambda X: torch.zeros(3), ValueError, "returned 3 value\\(s\\) for 1 point\\(s\\)"),
        ("seven", ValueError, "returned str, not numbers"),
    ],
    ids=["raises", "none", "wrong_count", "not_numbers"],
)
def test_run_bo_keeps_every_evaluation_when_the_objective_fails(bad, cause, message) -> None:
    objective = _FailingObjective(fail_on=3, bad=bad)
    bounds = objective.problem.bounds.to(DTYPE)
    with pytest.raises(bo.BOError, match=message) as caught:
        bo.run_bo(objective, bounds, 8, num_initial=3, surrogate="random", **SMALL)
    error = caught.value
    assert isinstance(error.__cause__, cause)
    # call 1: the initial design (3 points), call 2: iteration 1, call 3 fails in iteration 2
    assert error.iteration == 2 and error.candidates.shape == (1, 2)
    result = error.result
    assert result.X.shape == (4, 2) and result.iteration.tolist() == [0, 0, 0, 1]
    torch.testing.assert_close(result.Y, objective.problem(result.X))
    assert len(result.iteration_seconds) == 1


def test_run_bo_keeps_every_evaluation_when_the_surrogate_factory_fails() -> None:
    problem = _branin()
    calls = {"n": 0}

    def factory(X, Y, bounds):
        calls["n"] += 1
        if calls["n"] == 2:
            raise TypeError("injected: a bug in the model factory")
        return bo.make_bo_model(X, Y, bounds)

    with pytest.raises(bo.BOError, match="TypeError: injected") as caught:
        bo.run_bo(problem, problem.bounds.to(DTYPE), 8, num_initial=4, surrogate=factory, **SMALL)
    error = caught.value
    assert isinstance(error.__cause__, TypeError) and error.iteration == 2 and error.candidates is None
    assert error.result.X.shape == (5, 2) and torch.isfinite(error.result.Y).all()


def test_run_bo_keeps_every_evaluation_when_the_callback_fails_or_on_ctrl_c() -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)

    def callback(iteration, result):
        if iteration == 2:
            raise OSError("injected: checkpoint disk full")

    with pytest.raises(bo.BOError, match="OSError") as caught:
        bo.run_bo(problem, bounds, 8, num_initial=3, surrogate="random", callback=callback, **SMALL)
    assert caught.value.result.X.shape == (5, 2) and caught.value.candidates is None
    objective = _FailingObjective(fail_on=2, bad=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt) as interrupted:
        bo.run_bo(objective, bounds, 8, num_initial=3, surrogate="random", **SMALL)
    assert interrupted.value.result.X.shape == (3, 2)


def test_run_bo_accepts_an_explicit_initial_design() -> None:
    problem = _branin()
    bounds = problem.bounds.to(DTYPE)
    design = bounds[0] + torch.tensor([[0.1, 0.2], [0.5, 0.5], [0.9, 0.1], [0.3, 0.8]], dtype=DTYPE) * (
        bounds[1] - bounds[0]
    )
    result = bo.run_bo(problem, bounds, 6, initial_X=design, **SMALL)
    assert torch.equal(result.X[:4], design)
    assert result.X.shape == (6, 2)


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@pytest.mark.slow
def test_bo_example_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    example = _load(ROOT / "examples" / "bo_loop.py", "gp_ntk_example_bo_loop")
    example.main(["--quick", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    png = tmp_path / "bo_regret.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    for surrogate in ("NTK", "Matern-5/2", "random"):
        assert any(line.startswith(surrogate) for line in out.splitlines()), f"no result row for {surrogate}"
    assert "log10 regret" in out


@pytest.mark.slow
def test_benchmark_quick(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    benchmark = _load(ROOT / "benchmarks" / "bo.py", "gp_ntk_benchmark_bo")
    arguments = ["--quick", "--seeds", "1", "--surrogates", "ntk", "ibnn", "random", "--out", str(tmp_path)]
    output = benchmark.main([*arguments, "--no-progress"])
    records = output["records"]
    assert {(r["problem"], r["surrogate"]) for r in records} == {
        (p, s) for p in benchmark.QUICK_PROBLEMS for s in ("ntk", "ibnn", "random")
    }
    assert len(records) == 2 * 3
    for record in records:
        regret = torch.tensor(record["log_regret"])
        assert torch.isfinite(regret).all() and (regret[1:] <= regret[:-1]).all()
    tables = (tmp_path / "results.md").read_text()
    assert "log10 simple regret" in tables and "Wall time per BO iteration" in tables
    assert "NTK (ReLU, 3)" in tables and "BoTorch IBNN (3)" in tables
    assert (tmp_path / "bo_regret.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # resuming finds every run done and repeats none
    lines = (tmp_path / "runs.jsonl").read_text().count("\n")
    benchmark.main([*arguments, "--no-progress"])
    assert (tmp_path / "runs.jsonl").read_text().count("\n") == lines


def test_log_regret_floors_and_marks_missing_values() -> None:
    benchmark = _load(ROOT / "benchmarks" / "bo.py", "gp_ntk_benchmark_bo_regret")
    values = benchmark.log_regret([-math.inf, 0.0, 0.9, 1.0], optimal_value=1.0)
    assert math.isnan(values[0])
    assert values[1:] == pytest.approx([0.0, -1.0, math.log10(benchmark.REGRET_FLOOR)])


@pytest.mark.slow
def test_corner_diagnostic_counts_boundary_proposals() -> None:
    benchmark = _load(ROOT / "benchmarks" / "bo.py", "gp_ntk_benchmark_bo_corners")
    optimizer = bo.loop.optimize_acqf
    text = benchmark.corner_diagnostic("branin-2-quick", ["nngp-relu"], [0], restarts=2, raw_samples=16)
    assert bo.loop.optimize_acqf is optimizer  # the recording wrapper is removed again
    row = next(line for line in text.splitlines() if line.startswith("| NNGP (ReLU, 3) |"))
    shares = [float(cell.strip().rstrip("%")) for cell in row.split("|")[2:4]]
    assert all(0 <= share <= 100 for share in shares)
    assert shares[1] <= shares[0]  # a corner has every coordinate on the boundary


@pytest.mark.parametrize("warm", [True, False])
def test_run_bo_starts_each_fit_where_the_last_one_ended(monkeypatch, warm) -> None:
    entries, fitted = [], []
    real_fit = bo.fitting.fit_bo_model

    def recording_fit(model, **kwargs):
        entries.append({n: v.detach().clone() for n, v in model.named_parameters()})
        report = real_fit(model, **kwargs)
        fitted.append({n: v.detach().clone() for n, v in model.named_parameters()})
        return report

    monkeypatch.setattr(bo.loop, "fit_bo_model", recording_fit)
    problem = _branin()
    bo.run_bo(problem, problem.bounds.to(DTYPE), 8, num_initial=5, warm_start=warm, **SMALL)
    assert len(entries) == 3
    initial = {n: v.detach() for n, v in bo.make_bo_model(*_data(5, 2), _unit_bounds(2)).named_parameters()}
    for entry, last in zip(entries[1:], fitted[:-1]):
        expected = last if warm else initial
        assert all(torch.equal(entry[name], expected[name]) for name in entry)
    with pytest.raises(ValueError, match="warm_start must be True or False"):
        bo.run_bo(problem, problem.bounds.to(DTYPE), 8, warm_start="yes", **SMALL)
