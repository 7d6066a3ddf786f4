"""ImageClassifier is a scikit-learn estimator: clone, parameters, arrays, grid search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

import cnnkit
from cnnkit.base.errors import CnnkitError


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 arrays (0-16 scaled to 0-255), 8x8 grey."""
    bunch = load_digits()
    return (bunch.images * (255 / 16)).round().astype(np.uint8), bunch.target


def test_clone_and_params() -> None:
    est = cnnkit.ImageClassifier(model="lenet5", epochs=1)
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    assert twin.model == "lenet5" and twin.epochs == 1 and twin.lr is None
    assert twin.set_params(epochs=2, lr=0.01) is twin and (twin.epochs, twin.lr) == (2, 0.01)
    assert est.epochs == 1  # the original is untouched
    with pytest.raises(TypeError):
        cnnkit.ImageClassifier(epochz=1)  # a misspelt argument fails at once


def test_bad_options_fail_at_fit_with_one_clear_message(digits, tmp_path: Path) -> None:
    X, y = digits
    with pytest.raises(CnnkitError, match="--epochs must be positive"):
        cnnkit.ImageClassifier(epochs=0, out=str(tmp_path)).fit(X, y)
    with pytest.raises(CnnkitError, match="Unknown training option"):
        cnnkit.ImageClassifier(options={"shedule": "cosine"}, out=str(tmp_path)).fit(X, y)
    with pytest.raises(CnnkitError, match="uint8"):
        cnnkit.ImageClassifier(out=str(tmp_path)).fit(X.astype(float), y)
    with pytest.raises(CnnkitError, match="needs their labels"):
        cnnkit.ImageClassifier(out=str(tmp_path)).fit(X)
    assert not (tmp_path / "arrays").exists()  # nothing written for a mistake


def test_fit_predict_score_on_arrays(digits, tmp_path: Path) -> None:
    X, y = digits
    labels = np.array([f"d{v}" for v in y])  # labels come back as given, not as indices
    est = cnnkit.ImageClassifier(model="seed-cnn", epochs=2, out=str(tmp_path),
                                 plots=False, seed=0)
    assert est.fit(X[:1200], labels[:1200]) is est
    assert list(est.classes_) == sorted(set(labels))
    proba = est.predict_proba(X[1200:])
    assert proba.shape == (len(X) - 1200, 10) and np.allclose(proba.sum(1), 1, atol=1e-5)
    predicted = est.predict(X[1200:])
    assert predicted.dtype == labels.dtype and set(predicted) <= set(labels)
    assert (predicted == est.classes_[proba.argmax(1)]).all()
    assert est.score(X[1200:], labels[1200:]) > 0.7
    assert (est.run_dir_ / "model.safetensors").is_file()
    card = cnnkit.load(est.run_dir_, backend="torch").card
    assert (card.preprocess.img_size, card.preprocess.channels) == (28, 1)
    # the same arrays are written once: a refit reuses their folder
    est.fit(X[:1200], labels[:1200])
    assert len(list((tmp_path / "arrays").iterdir())) == 1


def test_grid_search_over_two_settings(digits, tmp_path: Path) -> None:
    X, y = digits
    search = GridSearchCV(
        cnnkit.ImageClassifier(model="lenet5", epochs=1, out=str(tmp_path), plots=False),
        {"lr": [0.003, 0.01]}, cv=2)
    search.fit(X[:600], y[:600])
    assert search.best_params_["lr"] in (0.003, 0.01)
    assert len(search.cv_results_["mean_test_score"]) == 2
    assert all(0.0 <= s <= 1.0 for s in search.cv_results_["mean_test_score"])
    assert search.best_estimator_.predict(X[600:610]).shape == (10,)
    assert search.score(X[600:], y[600:]) > 0.3


def test_fit_on_a_data_name_still_works(tmp_path: Path) -> None:
    est = cnnkit.ImageClassifier(model="lenet5", epochs=1, out=str(tmp_path), plots=False)
    est.fit("shapes")
    assert list(est.classes_) == list(est.classifier_.classes) and len(est.classes_) == 3
    assert est.score("shapes") == pytest.approx(est.evaluate("shapes").accuracy)
    missing, blank = est.predict_top(["missing.png", np.zeros((20, 20, 3), np.uint8)])
    assert missing.label is None and "not found" in missing.error  # one answer per input
    # a black image is none of the shapes: it gets its own answer, the model's classes
    # ranked, and "unknown" only as the run's rule says
    assert blank.top[0][0] in est.classes_ and blank.unknown_score is not None
    assert blank.label == ("unknown" if blank.unlike else blank.top[0][0])
