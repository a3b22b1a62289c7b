"""InvariantProjector inside skada (scikit-adaptation) pipelines, checked by value.

skada switches scikit-learn's metadata routing on for the whole process when it is imported,
so the pytest process never imports it: this file, run as a script, does every skada
computation in a fresh Python process and writes what it finds to a JSON file, and the tests
assert on that. The same process first runs the python blocks of ``docs/skada.md`` in order,
so the page is tested the way a reader runs it (``import skada`` first), and its figures are
checked against what its code prints.

The problem is the linear SCM of CLIP-ICM (``make_linear_scm``): three environments where a
spurious "colour" agrees with the label 90%, 80% and 10% of the time; the third is skada's
target domain. Its invariant subspace is known, and a classifier on the true invariant factors
gives the accuracy an invariant model can reach on the target domain.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import sklearn

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "skada.md"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("skada") is None, reason="skada is not installed"
)
# Not pytest.importorskip("skada"): importing skada here would switch metadata routing on for
# every later test of this process.

N_COMPONENTS, ALPHA = 4, 20.0
TARGET_DOMAIN = -3  # skada label of environment 2; environments 0 and 1 are sources 1 and 2


# --------------------------------------------------------------- the skada process (a script)
def _run_page():
    """Run the page's python blocks in order in one namespace; return it and what they print."""
    from test_docs import code_blocks  # the docs runner's parser: same blocks, same markers

    namespace, printed = {"__name__": "__docs__"}, io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in code_blocks(PAGE):
            if block.language == "python" and block.skip_reason is None:
                exec(compile(block.code, str(block), "exec"), namespace)
    return namespace, printed.getvalue()


def _page_results():
    namespace, printed = _run_page()
    data, target = namespace["data"], namespace["target"]
    return {
        "printed": printed,
        "sine": float(namespace["sine"]),
        "accuracy": float(namespace["accuracy"]),
        "plain_accuracy": float(namespace["plain"].score(data.X[target], data.y[target])),
        "adapted": {name: [float(v) for v in pair] for name, pair in namespace["adapted"].items()},
        "lodo_scores": [float(score) for score in namespace["scores"]["test_score"]],
    }


def _projector(**request):
    from skicm import InvariantProjector

    return InvariantProjector(n_components=N_COMPONENTS, alpha=ALPHA).set_fit_request(**request)


def _target_accuracy(model, data, target):
    return float(np.mean(model.predict(data.X[target]) == data.y[target]))


def _skada_results():
    """Everything the tests check, computed with skada imported (routing on)."""
    import skada
    from scipy.linalg import subspace_angles
    from skada.metrics import SupervisedScorer
    from skada.model_selection import LeaveOneDomainOut
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skicm import InvariantProjector
    from skicm.datasets import make_linear_scm

    results = {"routing_after_import": sklearn.get_config()["enable_metadata_routing"]}
    data = make_linear_scm(n_samples=3000, random_state=0)
    target = data.environments == 2
    source = ~target
    sample_domain = np.where(target, TARGET_DOMAIN, data.environments + 1)
    y_masked = np.where(target, -1, data.y)

    # The projector in a skada pipeline, next to the same projector fitted by hand.
    pipe = skada.make_da_pipeline(_projector(X_intervened=True), LogisticRegression())
    pipe.fit(data.X, y_masked, sample_domain=sample_domain, X_intervened=data.X_intervened)
    inside = pipe.named_steps["invariantprojector"].get_estimator()
    direct = InvariantProjector(n_components=N_COMPONENTS, alpha=ALPHA)
    direct.fit(data.X, X_intervened=data.X_intervened)
    plain = make_pipeline(_projector(X_intervened=True), LogisticRegression())
    plain.fit(data.X[source], data.y[source], X_intervened=data.X_intervened[source])
    oracle = LogisticRegression().fit(data.invariant_factors[source], data.y[source])
    erm = skada.make_da_pipeline(LogisticRegression())
    erm.fit(data.X, y_masked, sample_domain=sample_domain)
    results["pipeline"] = {
        "selector": type(pipe.named_steps["invariantprojector"]).__name__,
        "sine": float(np.sin(subspace_angles(inside.components_.T, data.invariant_basis.T)).max()),
        "components_vs_direct_fit": float(np.abs(inside.components_ - direct.components_).max()),
        "n_differences_seen": int(inside.n_differences_seen_),
        "accuracy": _target_accuracy(pipe, data, target),
        "accuracy_with_target_sample_domain": float(
            np.mean(
                pipe.predict(data.X[target], sample_domain=sample_domain[target]) == data.y[target]
            )
        ),
        "plain_accuracy": float(plain.score(data.X[target], data.y[target])),
        "oracle_accuracy": float(oracle.score(data.invariant_factors[target], data.y[target])),
        "erm_accuracy": _target_accuracy(erm, data, target),
    }

    # skada's selectors write the -1 of unknown target labels into the caller's y.
    y_given = data.y.copy()
    skada.make_da_pipeline(_projector(X_intervened=True), LogisticRegression()).fit(
        data.X, y_given, sample_domain=sample_domain, X_intervened=data.X_intervened
    )
    results["labels_overwritten"] = {
        "target": int(np.sum(y_given[target] != data.y[target])),
        "target_values": sorted(set(y_given[target].tolist())),
        "source": int(np.sum(y_given[source] != data.y[source])),
    }

    # Without set_fit_request, skada drops X_intervened silently; the projector says so.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unrequested = skada.make_da_pipeline(
            InvariantProjector(n_components=N_COMPONENTS, alpha=ALPHA), LogisticRegression()
        )
        unrequested.fit(
            data.X, y_masked, sample_domain=sample_domain, X_intervened=data.X_intervened
        )
    results["unrequested"] = {
        "warnings": sorted({type(w.message).__name__ for w in caught}),
        "n_differences_seen": int(
            unrequested.named_steps["invariantprojector"].get_estimator().n_differences_seen_
        ),
    }
    try:
        make_pipeline(
            InvariantProjector(n_components=N_COMPONENTS, alpha=ALPHA), LogisticRegression()
        ).fit(data.X, data.y, X_intervened=data.X_intervened)
    except Exception as error:
        results["unrequested"]["plain_pipeline_error"] = f"{type(error).__name__}: {error}"
    # The request belongs to the wrapped projector, not to skada's selector.
    selector = unrequested.named_steps["invariantprojector"]
    try:
        selector.set_fit_request(X_intervened=True)
    except TypeError as error:
        results["unrequested"]["selector_request_error"] = str(error)
    selector.base_estimator.set_fit_request(X_intervened=True)
    unrequested.fit(data.X, y_masked, sample_domain=sample_domain, X_intervened=data.X_intervened)
    results["unrequested"]["components_once_requested_vs_direct_fit"] = float(
        np.abs(selector.get_estimator().components_ - direct.components_).max()
    )

    # A renamed request (an alias) does not reach a transformer step through skada 0.6.
    try:
        skada.make_da_pipeline(_projector(groups="sample_domain"), LogisticRegression()).fit(
            data.X, y_masked, sample_domain=sample_domain
        )
    except Exception as error:
        results["alias_error"] = f"{type(error).__name__}: {error}"

    # skada's adapters after the projector, and alone.
    results["adapters"] = {}
    for name, adapter in [
        ("CORAL", skada.CORALAdapter()),
        ("subspace alignment", skada.SubspaceAlignmentAdapter(n_components=N_COMPONENTS)),
    ]:
        with_icm = skada.make_da_pipeline(
            _projector(X_intervened=True), sklearn.clone(adapter), LogisticRegression()
        )
        with_icm.fit(data.X, y_masked, sample_domain=sample_domain, X_intervened=data.X_intervened)
        alone = skada.make_da_pipeline(sklearn.clone(adapter), LogisticRegression())
        alone.fit(data.X, y_masked, sample_domain=sample_domain)
        results["adapters"][name] = {
            "with_projector": _target_accuracy(with_icm, data, target),
            "alone": _target_accuracy(alone, data, target),
        }

    # A scaler before the projector: the counterparts must be scaled too (transform_input).
    scaled = data.X * 50.0 + 7.0
    scaled_intervened = data.X_intervened * 50.0 + 7.0
    results["transform_input"] = {}
    for transform_input in (None, ["X_intervened"]):
        scaled_pipe = skada.make_da_pipeline(
            StandardScaler(), _projector(X_intervened=True), LogisticRegression()
        ).set_params(transform_input=transform_input)
        scaled_pipe.fit(
            scaled, y_masked, sample_domain=sample_domain, X_intervened=scaled_intervened
        )
        accuracy = float(np.mean(scaled_pipe.predict(scaled[target]) == data.y[target]))
        results["transform_input"][str(transform_input)] = accuracy
    scaled_plain = make_pipeline(
        StandardScaler(),
        _projector(X_intervened=True),
        LogisticRegression(),
        transform_input=["X_intervened"],
    )
    scaled_plain.fit(scaled[source], data.y[source], X_intervened=scaled_intervened[source])
    results["transform_input"]["plain"] = float(scaled_plain.score(scaled[target], data.y[target]))

    # Leave-one-domain-out: every domain as a source (+d) and as a target (-d).
    domain = data.environments + 1
    domain_twice = np.concatenate([domain, -domain])
    y_twice = np.concatenate([data.y, data.y])
    X_twice = np.concatenate([data.X, data.X])
    results["lodo"] = {}
    for name, model, extra in [
        ("projector", pipe, {"X_intervened": np.concatenate([data.X_intervened] * 2)}),
        ("logistic regression", erm, {}),
    ]:
        scores = cross_validate(
            model,
            X_twice,
            np.where(domain_twice < 0, -1, y_twice),
            cv=LeaveOneDomainOut(max_n_splits=3, test_size=0.3, random_state=0),
            scoring=SupervisedScorer(),
            params={"sample_domain": domain_twice, "target_labels": y_twice, **extra},
            return_indices=True,
        )
        results["lodo"][name] = {
            str(-domain_twice[test].min()): float(score)
            for test, score in zip(scores["indices"]["test"], scores["test_score"])
        }
    return results


def main(out):
    # The page first, in a process where nothing has imported skada yet.
    routing_before = sklearn.get_config()["enable_metadata_routing"]
    skada_before = "skada" in sys.modules
    page = _page_results()
    results = {
        "routing_before_import": routing_before,
        "skada_imported_before_the_page": skada_before,
        "page": page,
        **_skada_results(),
    }
    Path(out).write_text(json.dumps(results))


# ------------------------------------------------------------------------------------ the tests
@pytest.fixture(scope="module")
def found(tmp_path_factory):
    out = tmp_path_factory.mktemp("skada") / "results.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path[1:]])}
    # skada imports POT, whose backends import torch when it is installed; nothing here needs
    # torch, and skipping it saves most of the start-up time.
    env["POT_BACKEND_DISABLE_PYTORCH"] = "1"
    done = subprocess.run(
        [sys.executable, __file__, str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads(out.read_text())


def test_importing_skada_switches_routing_on_in_its_own_process_only(found):
    assert found["skada_imported_before_the_page"] is False
    assert found["routing_before_import"] is False
    assert found["routing_after_import"] is True
    assert sklearn.get_config()["enable_metadata_routing"] is False


def test_projector_in_a_skada_pipeline_recovers_the_invariant_subspace(found):
    pipeline = found["pipeline"]
    assert pipeline["selector"] == "Shared"
    assert pipeline["sine"] < 0.05
    # skada hands the projector every row and its counterpart, unchanged: source and target.
    assert pipeline["n_differences_seen"] == 3000
    assert pipeline["components_vs_direct_fit"] < 1e-10


def test_target_accuracy_matches_a_plain_pipeline_and_the_invariant_optimum(found):
    pipeline = found["pipeline"]
    assert abs(pipeline["accuracy"] - pipeline["plain_accuracy"]) < 0.01
    assert pipeline["accuracy"] > pipeline["oracle_accuracy"] - 0.02
    assert pipeline["accuracy_with_target_sample_domain"] == pipeline["accuracy"]
    # Without the projector the reversed colour drives the target accuracy to chance or below.
    assert pipeline["erm_accuracy"] < 0.6 < pipeline["accuracy"] - 0.15


def test_unrequested_counterparts_are_dropped_by_skada_and_the_projector_warns(found):
    unrequested = found["unrequested"]
    assert "NoInvarianceWarning" in unrequested["warnings"]
    assert unrequested["n_differences_seen"] == 0
    # The plain scikit-learn pipeline refuses instead, naming the parameter.
    assert unrequested["plain_pipeline_error"].startswith("UnsetMetadataPassedError")
    assert "X_intervened" in unrequested["plain_pipeline_error"]
    # Requesting on the selector is refused; on its base_estimator, even after wrapping, works.
    assert "X_intervened" in unrequested["selector_request_error"]
    assert unrequested["components_once_requested_vs_direct_fit"] < 1e-10


def test_skada_writes_masked_target_labels_into_the_callers_array(found):
    overwritten = found["labels_overwritten"]
    assert overwritten["target"] > 400 and overwritten["target_values"] == [-1]
    assert overwritten["source"] == 0


def test_renamed_request_does_not_reach_a_transformer_step_in_skada(found):
    assert found["alias_error"].startswith("TypeError")
    assert "sample_domain" in found["alias_error"]


def test_skada_adapters_after_the_projector_reach_the_invariant_optimum(found):
    oracle = found["pipeline"]["oracle_accuracy"]
    assert set(found["adapters"]) == {"CORAL", "subspace alignment"}
    for accuracy in found["adapters"].values():
        assert accuracy["with_projector"] > oracle - 0.02
        assert accuracy["alone"] < 0.6


def test_transform_input_sends_the_counterparts_through_earlier_steps(found):
    accuracy = found["transform_input"]
    assert abs(accuracy["['X_intervened']"] - accuracy["plain"]) < 0.01
    assert accuracy["['X_intervened']"] > found["pipeline"]["oracle_accuracy"] - 0.02
    # Unscaled counterparts against scaled embeddings: the differences are meaningless.
    assert accuracy["None"] < 0.6


def test_leave_one_domain_out_with_skadas_splitter(found):
    projector, erm = found["lodo"]["projector"], found["lodo"]["logistic regression"]
    assert set(projector) == set(erm) == {"1", "2", "3"}
    assert all(score > 0.72 for score in projector.values())
    # Environment 3 reverses the colour: only the projector holds up there.
    assert erm["3"] < 0.6 < projector["3"] - 0.15


def test_docs_page_runs_in_a_fresh_process_and_its_figures_are_what_it_prints(found):
    page = found["page"]
    assert page["sine"] < 0.05
    assert abs(page["accuracy"] - page["plain_accuracy"]) < 0.01
    assert page["accuracy"] == found["pipeline"]["accuracy"]
    assert [page["adapted"][name][0] for name in ("CORAL", "subspace alignment")] == [
        found["adapters"][name]["with_projector"] for name in ("CORAL", "subspace alignment")
    ]
    assert sorted(page["lodo_scores"]) == sorted(found["lodo"]["projector"].values())
    # Every figure printed by the page's code is quoted in its text (to 0.002: two samples
    # in a thousand, so another BLAS does not fail the test for one borderline prediction).
    text = PAGE.read_text()
    quoted = [float(v) for v in re.findall(r"\b0\.\d{3}\b", text)]
    printed = [float(v) for v in re.findall(r"\b0\.\d{3}\b", page["printed"])]
    assert len(printed) == 10
    for value in printed:
        assert min(abs(value - q) for q in quoted) <= 0.002, f"{value} is not on the page"
    # And the page's figures for the other rows are those this process measured.
    for value in (
        *(adapter["alone"] for adapter in found["adapters"].values()),
        *found["lodo"]["logistic regression"].values(),
        found["pipeline"]["erm_accuracy"],
        found["pipeline"]["oracle_accuracy"],
    ):
        assert min(abs(value - q) for q in quoted) <= 0.002, f"{value} is not on the page"


if __name__ == "__main__":
    main(sys.argv[1])
