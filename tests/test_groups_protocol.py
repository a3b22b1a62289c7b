"""The spurious-correlation protocol: selection on the validation split only, the group metrics
computed by hand, the baselines as registry methods in both protocols, the command's function."""

import argparse
import json

import numpy as np
import pytest
import sklearn
from PIL import Image
from sklearn.pipeline import make_pipeline
from sklearn.utils import Bunch

from skicm.baselines import ConceptErasure, GroupBalancedProbe
from skicm.evaluation import MethodContext, available_methods, make_linear_probe
from skicm.evaluation._baseline_methods import (
    BASELINE_METHODS,
    _calibration_pairs,
    _harmful_pairs,
    _LabelConceptBalancedProbe,
    _spurious_prompts,
)
from skicm.evaluation._groups import (
    GroupResults,
    _read_pixels,
    evaluate_spurious_groups,
    run_groups_command,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Accuracies are means of at most a few hundred 0/1 values in float64 (and weighted sums of
# four of them): two computations of the same predictions agree to n * 2**-52 < 1e-13; the
# tolerance below is ten times that, far below one row's 1/n (0.003).
ATOL = 1e-12


@pytest.fixture(autouse=True)
def one_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _synthetic(seed=0, n=(300, 200, 200)):
    """Feature 0 carries the label, feature 1 the place (agreeing 90% in train, 50% after)."""
    rng = np.random.default_rng(seed)
    split = np.repeat(["train", "val", "test"], n)
    y = rng.integers(0, 2, len(split))
    agree = np.where(split == "train", 0.9, 0.5)
    place = np.where(rng.random(len(split)) < agree, y, 1 - y)
    noise = rng.normal(size=(len(split), 4))
    X = np.column_stack([y + 0.9 * noise[:, 0], 2.0 * place + 0.3 * noise[:, 1], noise[:, 2:]])
    X_intervened = X.copy()
    X_intervened[:, 1] = 2.0 * (1 - place) + 0.3 * noise[:, 1]
    return Bunch(
        data=X, data_intervened=X_intervened, target=y, target_names=["neg", "pos"],
        place=place, place_names=["land", "water"], split=split,
    )  # fmt: skip


def _by_hand(y, predicted, groups, train_groups):
    """(worst-group, average, adjusted average) from the definitions."""
    names = np.unique(groups)
    accuracy = {g: np.mean(predicted[groups == g] == y[groups == g]) for g in names}
    weights = {g: np.mean(train_groups == g) for g in names}
    return (
        min(accuracy.values()),
        np.mean(predicted == y),
        sum(weights[g] * accuracy[g] for g in names),
    )


def _rows(data):
    return {s: np.flatnonzero(data.split == s) for s in ("train", "val", "test")}


def test_selection_on_validation_worst_group_and_metrics_by_hand():
    data = _synthetic()
    grid = [0.001, 0.01, 0.1, 1.0]
    results = evaluate_spurious_groups(data, methods=["linear probe"], C=grid, progress=False)
    rows = _rows(data)
    groups = np.array([f"{t}|{p}" for t, p in zip(data.target, data.place)])
    train, val, test = rows["train"], rows["val"], rows["test"]
    scores, models = [], []
    for C in grid:
        model = make_linear_probe(C).fit(data.data[train], data.target[train])
        scores.append(_by_hand(data.target[val], model.predict(data.data[val]), groups[val],
                               groups[train])[0])  # fmt: skip
        models.append(model)
    best = int(np.argmax(scores))
    (record,) = results.records
    assert json.loads(record["chosen"]) == {"C": grid[best]}
    assert record["validation_score"] == pytest.approx(scores[best], abs=ATOL)
    predicted = models[best].predict(data.data[test])
    worst, average, adjusted = _by_hand(data.target[test], predicted, groups[test], groups[train])
    assert record["worst_group"] == pytest.approx(worst, abs=ATOL)
    assert record["average"] == pytest.approx(average, abs=ATOL)
    assert record["adjusted_average"] == pytest.approx(adjusted, abs=ATOL)
    # The training split is 90% agreeing, so the adjusted average weighs the majority groups.
    assert record["adjusted_average"] != pytest.approx(record["average"], abs=0.01)
    assert results.groups == ["y=neg, place=land", "y=neg, place=water", "y=pos, place=land",
                              "y=pos, place=water"]  # fmt: skip
    assert sum(record["group_n_test"].values()) == len(test)
    assert record["group_n_train"]["y=neg, place=land"] == int(
        np.sum((data.target[train] == 0) & (data.place[train] == 0))
    )


def test_the_test_split_chooses_nothing():
    """Changing the test labels changes the test scores, never a choice or a validation score."""
    data = _synthetic()
    methods = ["linear probe", "linear probe ICM", "LEACE"]
    options = dict(interventions=["image"], methods=methods, n_components=[2],
                   alpha=[0.1, 10.0], C=[0.01, 1.0], progress=False)  # fmt: skip
    before = evaluate_spurious_groups(data, **options)
    flipped = Bunch(**data)
    flipped["target"] = data.target.copy()
    test = data.split == "test"
    flipped["target"][test] = 1 - flipped["target"][test]
    after = evaluate_spurious_groups(flipped, **options)
    assert before.methods == after.methods
    for a, b in zip(before.records, after.records):
        assert a["chosen"] == b["chosen"] and a["validation_score"] == b["validation_score"]
        assert a["average"] == pytest.approx(1 - b["average"], abs=ATOL)


def test_threads_give_the_same_records():
    data = _synthetic()
    options = dict(methods=["linear probe ICM", "DFR"], n_components=[2, 4], alpha=[0.1, 10.0],
                   C=[0.01, 1.0], progress=False)  # fmt: skip
    serial = evaluate_spurious_groups(data, n_jobs=1, **options)
    threaded = evaluate_spurious_groups(data, n_jobs=2, **options)
    assert serial.records == threaded.records


def test_interventional_scoring_is_the_worse_of_rows_and_counterparts():
    data = _synthetic()
    results = evaluate_spurious_groups(
        data, methods=["linear probe"], C=[0.001, 1.0], scoring="interventional", progress=False
    )
    (record,) = results.records
    rows = _rows(data)
    model = make_linear_probe(json.loads(record["chosen"])["C"])
    model.fit(data.data[rows["train"]], data.target[rows["train"]])
    val = rows["val"]
    expected = min(
        np.mean(model.predict(data.data[val]) == data.target[val]),
        np.mean(model.predict(data.data_intervened[val]) == data.target[val]),
    )
    assert record["validation_score"] == pytest.approx(expected, abs=ATOL)
    assert record["scoring"] == "interventional"


def test_leace_erases_the_place_and_dfr_balances_label_and_place():
    """The concept the methods get as groups is the place; DFR balances (label, place)."""
    data = _synthetic()
    results = evaluate_spurious_groups(data, methods=["LEACE", "DFR"], C=[1.0], progress=False)
    rows = _rows(data)
    train, test = rows["train"], rows["test"]
    X, y, place = data.data, data.target, data.place
    leace = make_pipeline(ConceptErasure(), *[s for _, s in make_linear_probe(1.0).steps])
    leace.fit(X[train], y[train], concepterasure__groups=place[train])
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    dfr = make_pipeline(
        StandardScaler(),
        GroupBalancedProbe(LogisticRegression(C=1.0, max_iter=1000), random_state=0),
    )
    dfr.fit(X[train], y[train], groupbalancedprobe__groups=2 * y[train] + place[train])
    for record, model in zip(results.records, (leace, dfr)):
        assert record["average"] == pytest.approx(
            np.mean(model.predict(X[test]) == y[test]), abs=ATOL
        )
    probe = _LabelConceptBalancedProbe(random_state=0).fit(X[train], y[train], groups=place[train])
    assert len(probe.group_counts_) == 4  # (label, place), not the place alone


def test_callable_data_gives_one_data_set_per_seed_and_errors():
    results = evaluate_spurious_groups(
        lambda random_state: _synthetic(random_state), methods=["linear probe"], C=[1.0],
        seeds=[3, 5], progress=False,
    )  # fmt: skip
    assert results.seeds == [3, 5]
    assert results.records[0]["average"] != results.records[1]["average"]
    # results.md: mean ± population std over the two seeds, from the records themselves.
    markdown = results.to_markdown()
    assert "Test accuracy (%), mean ± std over 2 seeds (3, 5)." in markdown
    cells = []
    for metric in ("worst_group", "average", "adjusted_average"):
        values = np.array([record[metric] for record in results.records])
        cells.append(f"{100 * values.mean():.1f} ± {100 * values.std():.1f}")
    assert f"| linear probe | {' | '.join(cells)} |" in markdown
    data = _synthetic()
    with pytest.raises(ValueError, match="scoring must be one of"):
        evaluate_spurious_groups(data, scoring="oracle", progress=False)
    no_pairs = Bunch(**{k: v for k, v in data.items() if k != "data_intervened"})
    with pytest.raises(ValueError, match="'interventional' needs counterparts"):
        evaluate_spurious_groups(no_pairs, scoring="interventional", progress=False)
    no_split = Bunch(**{k: v for k, v in data.items() if k != "split"})
    with pytest.raises(ValueError, match=r"data\['split'\]"):
        evaluate_spurious_groups(no_split, progress=False)
    no_val = Bunch(**data)
    no_val["split"] = np.where(data.split == "val", "train", data.split)
    with pytest.raises(ValueError, match="'val' split holds no row"):
        evaluate_spurious_groups(no_val, progress=False)
    unseen = Bunch(**data)
    unseen["split"] = data.split.copy()
    unseen["split"][(data.split == "test") & (data.target == 1) & (data.place == 0)] = "val"
    with pytest.raises(ValueError, match=r"\['y=pos, place=land'\] have training rows but no test"):
        evaluate_spurious_groups(unseen, progress=False)


def test_results_files_hold_every_group(tmp_path):
    data = _synthetic()
    methods = ["linear probe", "linear probe ICM", "LEACE", "DFR", "WiSE (class means)"]
    results = evaluate_spurious_groups(
        data, methods=methods, n_components=[2], alpha=[1.0], C=[0.1, 1.0], progress=False
    )
    assert results.methods == ["linear probe", "linear probe ICM (image)",
                               "linear probe ICM (groups)", "LEACE", "DFR",
                               "WiSE (class means)"]  # fmt: skip
    paths = results.save(tmp_path, title="synthetic")
    assert [p.name for p in paths] == ["results.csv", "results.md", "results.png"]
    import csv

    with (tmp_path / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(results.methods)
    for row, record in zip(rows, results.records):
        for group in results.groups:
            assert float(row[f"accuracy[{group}]"]) == pytest.approx(
                record["group_accuracy"][group],
                abs=1e-6,  # written with 6 digits
            )
            assert int(row[f"n_test[{group}]"]) == record["group_n_test"][group]
        assert float(row["worst_group"]) == pytest.approx(record["worst_group"], abs=1e-6)
    markdown = (tmp_path / "results.md").read_text()
    assert "| method | worst-group | average | adjusted average |" in markdown
    assert "Test accuracy (%), 1 seed (0), no standard deviation." in markdown
    for record in results.records:  # one seed: the values, no spread
        cells = [f"{100 * record[m]:.1f}" for m in ("worst_group", "average", "adjusted_average")]
        assert f"| {record['method']} | {' | '.join(cells)} |" in markdown
    assert "| n_test | " in markdown and "validation split" in markdown
    assert (tmp_path / "results.png").read_bytes()[:8] == PNG_SIGNATURE


def test_plot_labels_do_not_overlap():
    import matplotlib

    matplotlib.use("Agg")
    from skicm.evaluation._plots import _overlapping, _untangle

    groups = [f"y=class {i}, place=a long place name {j}" for i in range(2) for j in range(2)]
    rng = np.random.default_rng(0)
    records = [
        {"method": f"method number {m}", "seed": s, "worst_group": 0.3, "average": 0.8,
         "adjusted_average": 0.9, "group_accuracy": dict(zip(groups, rng.random(4))),
         "group_n_test": dict.fromkeys(groups, 100)}
        for m in range(4) for s in range(2)
    ]  # fmt: skip
    results = GroupResults(records, [f"method number {m}" for m in range(4)], groups,
                           "worst-group", 1 / 3)  # fmt: skip
    figure = results.plot(title="many bars")
    ax = figure.axes[0]
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    assert len(ax.texts) == 4 * (len(groups) + 2)
    # Every label is shown (the layout may hide labels it cannot fit: it must not need to).
    assert all(text.get_visible() for text in ax.texts)
    assert not _overlapping(ax.texts, renderer)
    assert not _overlapping(ax.get_xticklabels(), renderer)
    assert "n=100" in ax.get_xticklabels()[0].get_text()
    # The mechanism: the same bars squeezed into a narrow figure overlap, and are spread.
    figure.set_size_inches(2, 4.8)
    figure.canvas.draw()
    assert _overlapping(ax.texts, figure.canvas.get_renderer())
    _untangle(ax, ax.texts, own_figure=True, bar_width=0.8 / 4)
    assert all(text.get_visible() for text in ax.texts)
    assert not _overlapping(ax.texts, figure.canvas.get_renderer())
    assert not _overlapping(ax.get_xticklabels(), figure.canvas.get_renderer())


def test_prompts_describe_the_training_domains():
    context = MethodContext(kind=None, text_encoder=None, class_names=["landbird", "waterbird"],
                            templates=None, training_domains=["land", "open_water"])  # fmt: skip
    prompts = _spurious_prompts(context)
    assert "a photo of open water." in prompts and "land" in prompts
    assert ("a land background.", "a open water background.") in _harmful_pairs(context)
    assert _calibration_pairs(context) == [
        ("a land photo of a landbird.", "a open water photo of a landbird."),
        ("a land photo of a waterbird.", "a open water photo of a waterbird."),
    ]
    context.training_domains = ["land"]
    with pytest.raises(ValueError, match="training rows hold only"):
        _spurious_prompts(context)


def test_every_baseline_is_registered_with_its_needs():
    registry = available_methods()
    assert set(BASELINE_METHODS) <= set(registry)
    for name in ("Orth-Proj", "Orth-Cali", "PRISM-mini", "RoboShot"):
        assert registry[f"zero-shot {name}"].requirements() == ["text tower", "class names"]
        assert registry[f"linear probe {name}"].requirements() == ["text tower"]
    assert registry["LEACE"].fit_params == ("groups",)
    assert registry["DFR"].fit_params == ("groups",)
    assert registry["WiSE"].requirements() == ["text tower", "class names"]
    assert registry["WiSE (class means)"].requirements() == []
    assert not any(registry[name].default for name in BASELINE_METHODS)


@pytest.fixture(scope="module")
def tiny_embedder():
    from skicm import CLIPEmbedder
    from skicm.model_configs import register_tiny_clip

    return CLIPEmbedder(register_tiny_clip(), pretrained=None, device="cpu", progress=False)


def test_every_baseline_runs_in_both_protocols(tiny_embedder):
    rng = np.random.default_rng(0)
    n = 36
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = np.tile([0, 1], n // 2)
    options = dict(embedder=tiny_embedder, methods=BASELINE_METHODS, n_components=[4],
                   alpha=[1.0], C=[1.0], templates="a photo of a {}.", progress=False)  # fmt: skip
    place = np.tile([0, 0, 1, 1], n // 4)
    groups_data = Bunch(images=images, target=y, target_names=["landbird", "waterbird"],
                        place=place, place_names=["land", "water"],
                        split=np.repeat(["train", "val", "test"], n // 3))  # fmt: skip
    results = evaluate_spurious_groups(groups_data, **options)
    assert results.methods == BASELINE_METHODS
    for record in results.records:
        assert 0 <= record["worst_group"] <= record["average"] <= 1
    from skicm.evaluation import evaluate_domain_generalization

    domain_data = Bunch(images=images, target=y, target_names=["landbird", "waterbird"],
                        environments=np.repeat(["photo", "sketch", "cartoon"], n // 3))  # fmt: skip
    with sklearn.config_context(enable_metadata_routing=False):  # the protocol turns it on
        domains = evaluate_domain_generalization(domain_data, test_domains=["sketch"], **options)
    assert domains.methods == BASELINE_METHODS
    assert {r["method"] for r in domains.records} == set(BASELINE_METHODS)


# ------------------------------------------------------------------------------ the command
def _write_waterbirds(root, data, rows):
    lines = ["img_id,img_filename,y,split,place"]
    for i in rows:
        name = f"img_{i:04d}.png"
        Image.fromarray(data.images[i]).save(root / name)
        split = ["train", "val", "test"].index(data.split[i])
        lines.append(f"{i},{name},{data.target[i]},{split},{data.place[i]}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root / "metadata.csv"


def _args(source, **overrides):
    args = dict(
        source=str(source), layout="waterbirds", target_attribute=None, spurious_attribute=None,
        image_root=None, methods=["linear probe", "DFR"], interventions=None, scoring="auto",
        n_components=[4], alpha=[1.0], C=[0.1, 1.0], seeds=1, templates="openai-imagenet",
        intervention_seed=0, n_jobs=1, no_progress=True, store=None, output=None, plot=None,
        domains=None, test_domains=None, class_alias=[], class_alias_file=None,
        base_classes=None,
    )  # fmt: skip
    args.update(overrides)
    return argparse.Namespace(**args)


@pytest.fixture(scope="module")
def spurious_digit_files(tmp_path_factory):
    from skicm.datasets import load_mnist
    from skicm.datasets._spurious_digits import make_spurious_digits

    images, labels = load_mnist()
    subset = np.random.default_rng(0).choice(len(labels), 400, replace=False)
    data = make_spurious_digits(images[subset], labels[subset], random_state=0)
    root = tmp_path_factory.mktemp("waterbirds")
    return data, _write_waterbirds(root, data, range(len(data.target)))


def test_the_command_reads_pixels_and_matches_the_python_call(spurious_digit_files, tmp_path,
                                                              capsys):  # fmt: skip
    from skicm.datasets._group_metadata import load_waterbirds_metadata

    data, metadata = spurious_digit_files
    loaded = load_waterbirds_metadata(metadata)
    # PNG is lossless: the pixels read back are the data set's own features, bit for bit.
    np.testing.assert_array_equal(_read_pixels(loaded.paths), data.data)
    assert run_groups_command(_args(metadata, output=str(tmp_path / "cli"))) == 0
    printed = capsys.readouterr().out
    assert "| method | worst-group | average | adjusted average |" in printed
    python = evaluate_spurious_groups(
        loaded, methods=["linear probe", "DFR"], n_components=[4], alpha=[1.0], C=[0.1, 1.0],
        progress=False,
    )  # fmt: skip
    python.to_csv(tmp_path / "python.csv")
    assert (tmp_path / "cli" / "results.csv").read_bytes() == (tmp_path / "python.csv").read_bytes()
    # The Bunch itself, with the place names the metadata lacks, gives the same numbers.
    direct = evaluate_spurious_groups(
        data, methods=["linear probe", "DFR"], n_components=[4], alpha=[1.0], C=[0.1, 1.0],
        progress=False,
    )  # fmt: skip
    assert [r["worst_group"] for r in direct.records] == [r["worst_group"] for r in python.records]


def test_the_command_rejects_options_of_other_protocols(spurious_digit_files):
    _, metadata = spurious_digit_files
    with pytest.raises(ValueError, match="--test-domains applies to the other protocols"):
        run_groups_command(_args(metadata, test_domains=["land"]))
    with pytest.raises(ValueError, match="--scoring for --protocol groups"):
        run_groups_command(_args(metadata, scoring="worst-environment"))
    with pytest.raises(ValueError, match="--dataset colored-mnist builds a leave-one-domain"):
        run_groups_command(_args(metadata, dataset="colored-mnist"))
    with pytest.raises(ValueError, match="--store keeps embeddings"):
        run_groups_command(_args(metadata, store="x.sqlite"))
    with pytest.raises(ValueError, match="needs SOURCE"):
        run_groups_command(argparse.Namespace(**{**vars(_args(metadata)), "source": None}))


# ------------------------------------------------------------------------------ the recipe
def _recipe_commands():
    """The ``skicm evaluate ... --protocol groups`` commands of docs/groups_protocol.md's recipe."""
    import re
    import shlex
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "groups_protocol.md").read_text()
    recipe = page[page.index("## Recipe") :]
    block = re.search(r"```bash\n(.*?)```", recipe, flags=re.DOTALL).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.startswith("skicm evaluate")]


def _generated_source(layout, root, command):
    """Small real files in the layout the command reads, at the path it names."""
    rng = np.random.default_rng(0)
    source = root / command[2]

    def image(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)

    cells = [(y, p, s) for s in range(3) for y in range(2) for p in range(2) for _ in range(2)]
    if layout == "waterbirds":
        lines = ["img_id,img_filename,y,split,place,place_filename"]
        for i, (y, p, s) in enumerate(cells):
            image(source.parent / f"{i:03d}.Bird/{i}.jpg")
            lines.append(f"{i},{i:03d}.Bird/{i}.jpg,{y},{s},{p},bg.jpg")
        source.write_text("\n".join(lines) + "\n")
    elif layout == "celeba":
        header = command[command.index("--target-attribute") + 1]
        spurious = command[command.index("--spurious-attribute") + 1]
        attributes = [str(len(cells)), f"{header} Smiling {spurious}"]
        partition = []
        for i, (y, p, s) in enumerate(cells):
            name = f"{i + 1:06d}.jpg"
            image(source.parent / "img_align_celeba" / name)
            attributes.append(f"{name} {2 * y - 1} 1 {2 * p - 1}")
            partition.append(f"{name} {s}")
        source.write_text("\n".join(attributes) + "\n")
        (source.parent / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    else:
        for cls, context in (("cat", "sofa"), ("cat", "grass"), ("dog", "sofa"), ("dog", "bench")):
            for i in range(5):
                image(source / cls / context / f"{i}.png")
    return source


@pytest.mark.parametrize("index", range(3))
def test_the_recipe_runs_with_a_tiny_model(index, tmp_path, tiny_embedder, monkeypatch, capsys):
    """Each recipe command as written, except: a tiny random CLIP instead of ViT-L-14 with the
    OpenAI weights (none offline), generated files instead of the downloads, one seed, a small
    grid."""
    commands = _recipe_commands()
    assert len(commands) == 3
    command = commands[index]
    assert "--model-name" in command and command[command.index("--model-name") + 1] == "ViT-L-14"
    layout = command[command.index("--layout") + 1]
    monkeypatch.chdir(tmp_path)
    source = _generated_source(layout, tmp_path, command)

    def option(name, default=None):
        return command[command.index(name) + 1] if name in command else default

    args = _args(
        source, layout=layout, methods=None, n_components=[4], alpha=[1.0], C=[1.0],
        templates=option("--templates", "a photo of a {}."),
        target_attribute=option("--target-attribute"),
        spurious_attribute=option("--spurious-attribute"),
        output=str(tmp_path / option("--output")),
    )  # fmt: skip
    assert run_groups_command(args, embedder=tiny_embedder) == 0
    output = tmp_path / option("--output")
    import csv

    with (output / "results.csv").open() as handle:
        methods = [row["method"] for row in csv.DictReader(handle)]
    for name in ("zero-shot", "linear probe ICM (image)", "linear probe ICM (groups)", "DFR",
                 "zero-shot Orth-Proj", "linear probe RoboShot", "WiSE"):  # fmt: skip
        assert name in methods
    assert (output / "results.png").read_bytes()[:8] == PNG_SIGNATURE


def test_adjusted_average_scoring_weights_validation_groups_by_their_training_share():
    """`scoring="adjusted-average"` scores the validation split by WILDS' adjusted average, the
    group weights taken from the TRAINING rows (not the validation rows)."""
    from types import SimpleNamespace

    from sklearn.dummy import DummyClassifier

    from skicm.evaluation._groups import GROUP_SCORINGS, _validation_score
    from skicm.metrics import adjusted_average_accuracy

    assert "adjusted-average" in GROUP_SCORINGS
    groups = np.array([0] * 9 + [1] * 1 + [0, 1, 1, 1])  # train: 90% group 0; val: 25% group 0
    y = np.array([0] * 9 + [1] + [0, 1, 0, 0])
    train, val = np.arange(10), np.arange(10, 14)
    features = SimpleNamespace(X=np.zeros((14, 2)), y=y)
    always_zero = DummyClassifier(strategy="constant", constant=0).fit(features.X, y)
    score = _validation_score("adjusted-average", always_zero, features, val, groups, train)
    # group 0 (val row 10): right; group 1 (rows 11-13): 2 of 3 right; weights 0.9 / 0.1.
    assert score == pytest.approx(0.9 * 1.0 + 0.1 * (2 / 3), abs=1e-12)
    assert score == adjusted_average_accuracy(
        y[val],
        always_zero.predict(features.X[val]),
        groups=groups[val],
        group_weights=groups[train],
    )
