"""The numpy demo models: they learn the generated relation and honour the Protocol."""

from __future__ import annotations

import numpy as np
import pytest

from safeloop.services.models.exceptions import TrainingError
from safeloop.services.models.linear import LinearModel, LogisticModel, train_linear, train_logistic
from safeloop.services.models.protocol import ModelProtocol
from safeloop.services.models.task import ModelTask, confidence_of
from safeloop.services.models.training import make_dataset, train_model


def test_logistic_learns_the_relation() -> None:
    dataset = make_dataset(ModelTask.CLASSIFICATION, 5000, seed=3)
    model, metadata = train_model("churn", "v1", ModelTask.CLASSIFICATION, dataset)
    assert isinstance(model, LogisticModel)
    assert metadata.metrics["accuracy"] > 0.65
    assert metadata.metrics["log_loss"] < 0.6


def test_linear_learns_the_relation() -> None:
    dataset = make_dataset(ModelTask.REGRESSION, 5000, seed=3)
    model, metadata = train_model("price", "v1", ModelTask.REGRESSION, dataset)
    assert type(model) is LinearModel
    # The generated noise has standard deviation 0.5: a good fit reaches about that.
    assert metadata.metrics["rmse"] < 0.55


def test_single_row_and_batch_agree() -> None:
    dataset = make_dataset(ModelTask.CLASSIFICATION, 500, seed=1)
    model = train_logistic(dataset.rows, dataset.targets, dataset.feature_names, "v1", epochs=50)
    batch = model.predict_batch(dataset.rows[:20])
    singles = [
        model.predict(dict(zip(dataset.feature_names, row.tolist(), strict=True)))
        for row in dataset.rows[:20]
    ]
    np.testing.assert_allclose(batch, singles, rtol=1e-12)


def test_logistic_extremes_do_not_overflow() -> None:
    model = LogisticModel("v1", ("x",), np.array([1.0]), 0.0)
    assert model.predict({"x": 1e6}) == 1.0
    assert model.predict({"x": -1e6}) == 0.0


def test_models_satisfy_the_protocol() -> None:
    model = LinearModel("v1", ("x",), np.array([2.0]), 1.0)
    assert isinstance(model, ModelProtocol)
    assert model.predict({"x": 3.0}) == 7.0


def test_training_rejects_bad_data() -> None:
    rows = np.array([[1.0], [np.nan]])
    with pytest.raises(TrainingError, match="NaN"):
        train_linear(rows, np.array([1.0, 2.0]), ("x",), "v1")
    with pytest.raises(TrainingError, match="0 or 1"):
        train_logistic(np.array([[1.0], [2.0]]), np.array([0.0, 2.0]), ("x",), "v1")
    with pytest.raises(TrainingError, match="rows must be"):
        train_linear(np.ones((3, 2)), np.ones(3), ("x",), "v1")


def test_confidence() -> None:
    assert confidence_of(ModelTask.CLASSIFICATION, 0.2) == 0.8
    assert confidence_of(ModelTask.REGRESSION, 12.0) is None
