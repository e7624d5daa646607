"""gp_ntk.models: construction, checks, standardisation, prediction, variational training."""

from __future__ import annotations

import math
import pickle

import gpytorch
import pytest
import torch

import gp_ntk
from gp_ntk.models import ExactGPModel, VariationalGPModel, check_training_data, make_kernel


def _data(n=60, d=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=dtype) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.5 * x[:, -1] + 0.05 * torch.randn(n, generator=g, dtype=dtype)
    return x, y


@pytest.mark.parametrize("name", ["ntk", "nngp", "arccos", "erf", "rbf", "matern52"])
def test_make_kernel_and_exact_model_for_each_name(name):
    x, y = _data()
    model = ExactGPModel(x, y, kernel=name)
    assert isinstance(model.covar_module, gpytorch.kernels.ScaleKernel)
    assert next(model.parameters()).dtype == torch.float64
    pred = model.predict(x[:5])
    assert pred.mean.shape == (5,) and bool((pred.lower < pred.mean).all() and (pred.mean < pred.upper).all())


def test_make_kernel_refuses_unknown_name():
    with pytest.raises(ValueError, match="kernel name must be one of"):
        make_kernel("transformer")


def test_default_model_is_depth3_relu_ntk_and_own_scale_kernel_is_not_wrapped_twice():
    x, y = _data()
    model = ExactGPModel(x, y)
    assert isinstance(model.covar_module.base_kernel, gp_ntk.NTKKernel)
    assert model.covar_module.base_kernel.depth == 3
    scaled = gpytorch.kernels.ScaleKernel(gp_ntk.NNGPKernel(2))
    assert ExactGPModel(x, y, kernel=scaled).covar_module is scaled
    assert isinstance(
        ExactGPModel(x, y, kernel=gp_ntk.NNGPKernel(2), scale=False).covar_module, gp_ntk.NNGPKernel
    )


def test_one_dimensional_inputs_and_column_targets_are_accepted():
    x = torch.linspace(-1, 1, 20, dtype=torch.float64)
    y = torch.sin(3 * x).unsqueeze(-1)
    model = ExactGPModel(x, y)
    assert model.train_inputs[0].shape == (20, 1) and model.train_targets.shape == (20,)
    assert model.predict(torch.linspace(-1, 1, 7, dtype=torch.float64)).mean.shape == (7,)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (torch.zeros(0, 2), torch.zeros(0), "no rows"),
        (torch.zeros(5, 2), torch.zeros(4), r"train_y must have shape \(5,\)"),
        (torch.zeros(5, 2), torch.zeros(5, 2), r"train_y must have shape \(5,\)"),
        (torch.zeros(5, 2, 2), torch.zeros(5), r"train_x must have shape \(n, d\)"),
        (torch.zeros(5, 2, dtype=torch.int64), torch.zeros(5), "floating-point"),
        (torch.zeros(5, 2), torch.zeros(5, dtype=torch.float64), "same dtype"),
        (torch.tensor([[0.0], [float("nan")], [1.0]]), torch.zeros(3), "train_x contains NaN"),
        (
            torch.zeros(3, 1),
            torch.tensor([0.0, float("inf"), 1.0]),
            "train_y contains NaN or infinite values in 1",
        ),
        ([[0.0]], torch.zeros(1), "torch.Tensor"),
    ],
)
def test_bad_training_data_is_refused_by_name(x, y, match):
    with pytest.raises(ValueError, match=match):
        check_training_data(x, y)
    with pytest.raises(ValueError, match=match):
        ExactGPModel(x, y)


def test_single_point_model_predicts_but_fit_refuses():
    x, y = torch.tensor([[0.5, -0.5]], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    model = ExactGPModel(x, y)
    pred = model.predict(torch.tensor([[0.5, -0.5], [2.0, 1.0]], dtype=torch.float64))
    assert torch.isfinite(pred.mean).all() and torch.isfinite(pred.variance).all()
    with pytest.raises(ValueError, match="at least 2 training points"):
        gp_ntk.fit(model, progress=False)


def test_prediction_features_must_match():
    x, y = _data(d=3)
    model = ExactGPModel(x, y)
    with pytest.raises(ValueError, match="3 features"):
        model.predict(torch.zeros(4, 2, dtype=torch.float64))


def test_standardized_inputs_make_the_model_translation_and_scale_invariant():
    # a dot-product kernel on raw inputs depends on where the origin is; after centring and
    # scaling with training statistics, shifting and rescaling the whole problem changes nothing
    x, y = _data(d=2)
    test_x = torch.randn(9, 2, dtype=torch.float64)
    shift, factor = torch.tensor([5.0, -3.0], dtype=torch.float64), 7.0
    base = ExactGPModel(x, y).predict(test_x)
    moved = ExactGPModel(x * factor + shift, y).predict(test_x * factor + shift)
    torch.testing.assert_close(moved.mean, base.mean, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(moved.variance, base.variance, rtol=1e-8, atol=1e-10)
    raw = ExactGPModel(x * factor + shift, y, standardize_inputs=False).predict(test_x * factor + shift)
    assert not torch.allclose(raw.mean, base.mean, atol=1e-3)


def test_constant_feature_is_centred_not_divided_by_zero():
    x, y = _data(d=2)
    x[:, 1] = 3.0
    pred = ExactGPModel(x, y).predict(x[:4])
    assert torch.isfinite(pred.mean).all() and torch.isfinite(pred.variance).all()


@pytest.mark.parametrize(("dtype", "noise"), [(torch.float64, 1e-13), (torch.float32, 1e-6)])
def test_feature_constant_up_to_rounding_noise_is_not_blown_up(dtype, noise):
    # a column that is 3 up to noise far below its precision-relative floor must act like the
    # exactly constant column, not be scaled by 1 / noise into a dominant random feature
    x, y = _data(d=3, dtype=dtype)
    x[:, 2] = 3.0
    exact = ExactGPModel(x, y)
    noisy_x = x.clone()
    noisy_x[:, 2] += noise * torch.randn(x.shape[0], generator=torch.Generator().manual_seed(5), dtype=dtype)
    noisy = ExactGPModel(noisy_x, y)
    scale = noisy.input_standardization.scale[0, 2]
    assert float(scale) >= math.sqrt(torch.finfo(dtype).eps) * 3.0 * (1 - 1e-6)
    test_x = x[:8].clone()
    tolerance = 1e-4 if dtype == torch.float64 else 1e-2
    torch.testing.assert_close(
        noisy.predict(test_x).mean, exact.predict(test_x).mean, rtol=tolerance, atol=tolerance
    )
    # a feature varying well above the floor is still standardised to unit variance
    factor = 1e-6 if dtype == torch.float64 else 1e-2
    varying = ExactGPModel(x[:, :2] * factor + 3.0, y).input_standardization
    torch.testing.assert_close(varying.scale, x[:, :2].std(0, keepdim=True) * factor, rtol=1e-3, atol=0.0)


def test_state_dict_and_pickle_round_trip_keep_predictions():
    x, y = _data()
    model = ExactGPModel(x, y, kernel=gp_ntk.NNGPKernel(2, "erf", 1.3, 0.2))
    gp_ntk.fit(model, max_iter=5, progress=False)
    expected = model.predict(x[:6]).mean
    clone = ExactGPModel(x, y, kernel=gp_ntk.NNGPKernel(2, "erf", 1.0, 0.1))
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone.predict(x[:6]).mean, expected)
    restored = pickle.loads(pickle.dumps(model))
    torch.testing.assert_close(restored.predict(x[:6]).mean, expected)


def test_plain_gpytorch_models_need_no_helper():
    """The kernels are ordinary covar_modules; the helpers are optional."""
    x, y = _data()

    class Plain(gpytorch.models.ExactGP):
        def __init__(self):
            super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gp_ntk.NTKKernel(2, "relu"))

        def forward(self, z):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))

    model = Plain().double()
    result = gp_ntk.fit(model, max_iter=20, progress=False)
    assert result.losses[-1] < result.losses[0]


@pytest.mark.slow
def test_variational_model_elbo_decreases_on_minibatches():
    x, y = _data(n=500, seed=2)
    model = VariationalGPModel(x, y, kernel=gp_ntk.NTKKernel(2, "relu", 2.0, 0.1), num_inducing=32)
    assert model.variational_strategy.inducing_points.shape == (32, 2)
    start = model.variational_strategy.inducing_points.detach().clone()
    result = gp_ntk.fit(model, max_iter=25, batch_size=64, lr=0.05, progress=False)
    assert all(math.isfinite(v) for v in result.losses)
    # 8 minibatch steps per epoch: the epoch-mean negative ELBO falls well below its start
    assert result.best_loss < result.losses[0] - 0.3
    assert not torch.equal(model.variational_strategy.inducing_points, start)  # learned locations
    pred = model.predict(x)
    rmse = float((pred.mean - y).pow(2).mean().sqrt())
    assert rmse < 0.5 * float(y.std())


def test_variational_model_checks_its_arguments():
    x, y = _data()
    with pytest.raises(ValueError, match="num_inducing"):
        VariationalGPModel(x, y, num_inducing=0)
    model = VariationalGPModel(x, y, num_inducing=500)  # capped at n
    assert model.variational_strategy.inducing_points.shape[0] == x.shape[0]


@pytest.mark.parametrize("source_kwargs", [dict(bias_variance=0.0), dict(depth=5), dict(ard_num_dims=3)])
def test_refused_model_load_changes_nothing(source_kwargs):
    # torch copies matching tensors before it reports missing/unexpected keys or a kernel
    # refuses a different structure: the model must come out of a refused load unchanged
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.sin(x.sum(-1))
    target = gp_ntk.ExactGPModel(x, y, kernel=gp_ntk.NNGPKernel(depth=2)).double()
    with torch.no_grad():
        target.mean_module.constant.fill_(0.25)
    kwargs = dict(depth=2) | source_kwargs
    source = gp_ntk.ExactGPModel(x, y, kernel=gp_ntk.NNGPKernel(**kwargs)).double()
    with torch.no_grad():
        source.mean_module.constant.fill_(-3.0)
        source.covar_module.raw_outputscale.fill_(2.0)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(RuntimeError):
        target.load_state_dict(source.state_dict())
    after = target.state_dict()
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert torch.equal(value, after[name]), name
