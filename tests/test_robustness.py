"""The ImageNet robustness collection and protocol: class lists, restricted predictions,
effective robustness, its plot, and ``skicm evaluate --protocol robustness`` on shards.

The class lists and prompts are compared with CLIP_benchmark's own (LAION-AI/CLIP_benchmark at
commit 48de38c): the SHA-256 digests below are of ``json.dumps`` of its lists, computed from
``clip_benchmark/datasets/en_classnames.json`` (``imagenet1k``),
``en_zeroshot_classification_templates.json`` (``imagenet1k``) and ``builder.py``
(``all_imagenet_wordnet_ids``; ``imagenet_r_wnids`` and ``imagenet_a_wnids`` put in ImageNet
order by its masks), and of ObjectNet's mapping as its ``objectnet.py`` reads it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import re
import shlex
import tarfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.utils import Bunch

from skicm.datasets._imagenet_variants import IMAGENET_VARIANTS, imagenet_variant, variant_name
from skicm.evaluation._robustness import (
    CANDIDATE_COLUMNS,
    ROBUSTNESS_COLUMNS,
    RobustnessResults,
    _class_map,
    evaluate_robustness,
    fit_logit_line,
    plot_effective_robustness,
    restricted_predictions,
)

CLIP_BENCHMARK = {
    "imagenet1k class names": "6ef5246539bb6543da0958381424e7f7b63b6758af04434f6e8f6da88e0cca70",
    "imagenet1k templates": "331000b1f1c75fbb1f096e3a4ce7820093d52408a8d472cfbdea70d206b9edaa",
    "imagenet wnids": "624954f06d059ddd477ab500dc059cf2628ac01e441d8a648d1dc6fbfe504c5a",
    "imagenet-r wnids": "3670a5ca7b6bf941f4ab855c2ebe26d3b1362e6de4f14d1265b74bc1d40db4ef",
    "imagenet-a wnids": "5253ad9ff8fe19cc291d5e8f2a00e33f03fc2e717a2ed5226910925838a6fc9f",
    "objectnet class names": "fdb6f7c84b99091f2f3f04c052174f680a408488f38e041c873a1e93043b9e1b",
    "objectnet imagenet indices": (
        "1fb56e14688a4c2aa8c595ef435fcbdb886e4669f05ed53d99cfa6c064e7774a"
    ),
}
ROOT = Path(__file__).resolve().parents[1]


def digest(values):
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()


# ------------------------------------------------------------------------------ class lists
def test_imagenet_names_and_templates_are_clip_benchmarks():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    from skicm.zero_shot import zero_shot_templates

    assert digest(list(IMAGENET_CLASSNAMES)) == CLIP_BENCHMARK["imagenet1k class names"]
    # CLIP_benchmark writes the class name as {c}; open_clip's templates are functions, and
    # skicm's "openai-imagenet" set (every variant's templates) writes it as {}.
    templates = [template("{c}") for template in OPENAI_IMAGENET_TEMPLATES]
    assert digest(templates) == CLIP_BENCHMARK["imagenet1k templates"]
    ours = [
        t.replace("{}", "{c}") for t in zero_shot_templates(imagenet_variant("objectnet").templates)
    ]
    assert digest(ours) == CLIP_BENCHMARK["imagenet1k templates"]


def test_variants_match_clip_benchmark():
    variants = {name: imagenet_variant(name) for name in IMAGENET_VARIANTS}
    counts = {name: len(v.target_names) for name, v in variants.items()}
    assert counts == {
        "imagenet1k": 1000, "imagenetv2": 1000, "imagenet_sketch": 1000, "imagenet-r": 200,
        "imagenet-a": 200, "objectnet": 113,
    }  # fmt: skip
    full = variants["imagenet1k"]
    assert digest(full.wnids) == CLIP_BENCHMARK["imagenet wnids"]
    for name in ("imagenetv2", "imagenet_sketch"):
        assert variants[name].target_names == full.target_names
        assert variants[name].imagenet_classes == [[i] for i in range(1000)]
    for name in ("imagenet-r", "imagenet-a"):
        variant = variants[name]
        assert digest(variant.wnids) == CLIP_BENCHMARK[f"{name} wnids"]
        indices = [ids[0] for ids in variant.imagenet_classes]
        assert indices == sorted(indices) and len(set(indices)) == 200  # in ImageNet order
        assert variant.target_names == [full.target_names[i] for i in indices]
        assert variant.wnids == [full.wnids[i] for i in indices]
    r, a = variants["imagenet-r"], variants["imagenet-a"]
    assert (r.target_names[0], r.target_names[-1]) == ("goldfish", "acorn")
    assert (a.target_names[0], a.target_names[-1]) == ("stingray", "acorn")
    assert (full.target_names[0], full.target_names[-1]) == ("tench", "toilet paper")
    objectnet = variants["objectnet"]
    assert digest(objectnet.target_names) == CLIP_BENCHMARK["objectnet class names"]
    assert digest(objectnet.imagenet_classes) == CLIP_BENCHMARK["objectnet imagenet indices"]
    assert (objectnet.target_names[0], objectnet.target_names[-1]) == ("alarm clock", "wok")
    assert objectnet.folders == sorted(objectnet.folders)  # CLIP_benchmark's label order
    alarm = objectnet.imagenet_classes[0]
    assert [full.target_names[i] for i in alarm] == ["analog clock", "digital clock"]


def test_variant_names_and_errors():
    assert variant_name("wds_imagenet-r") == "imagenet-r"
    assert variant_name("ImageNet-Sketch") == "imagenet_sketch"
    assert variant_name("cifar10") is None
    with pytest.raises(ValueError, match=r"'cifar10' is not a variant.*imagenet1k"):
        imagenet_variant("cifar10")
    assert imagenet_variant("imagenet-a", class_names=False).target_names is None


# ------------------------------------------------------------------------------ predictions
def test_restricted_predictions_on_a_variant_are_the_masked_argmax():
    """ImageNet-R: the 1000-way scores restricted to its 200 columns (CLIP_benchmark's mask)."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 1000))
    r = imagenet_variant("imagenet-r", class_names=False)
    mask = np.zeros(1000, dtype=bool)
    mask[[ids[0] for ids in r.imagenet_classes]] = True
    expected = np.argmax(scores[:, mask], axis=1)
    mapping = _class_map("imagenet-r", Bunch(), None, 1000, True)
    assert np.array_equal(restricted_predictions(scores, np.arange(1000), mapping), expected)
    # ObjectNet: each class the maximum over its ImageNet classes (wise-ft's project_logits)
    objectnet = imagenet_variant("objectnet", class_names=False)
    projected = np.stack([scores[:, ids].max(axis=1) for ids in objectnet.imagenet_classes], 1)
    mapping = _class_map("objectnet", Bunch(), None, 1000, True)
    predicted = restricted_predictions(scores, np.arange(1000), mapping)
    assert np.array_equal(predicted, np.argmax(projected, axis=1))


def _toy(rng, n, drift_to=None, drift=0.0):
    """10 classes in 8 dimensions; ``drift`` moves every image towards class ``drift_to``."""
    centres = np.random.default_rng(42).normal(0, 2.0, (10, 8))
    y = np.arange(n) % 10
    X = centres[y] + rng.normal(0, 1.0, (n, 8))
    if drift_to is not None:
        X = X + drift * (centres[drift_to] - centres[y])
    return X, y


@pytest.fixture(scope="module")
def toy_results():
    """A probe trained on 10 toy classes, a 4-class shift whose images drift to class 5."""
    rng = np.random.default_rng(0)
    names = [f"class {i}" for i in range(10)]
    X, y = _toy(rng, 300)
    X_id, y_id = _toy(rng, 200)
    X_s, y_s = _toy(rng, 400, drift_to=5, drift=0.55)
    shift_classes = [7, 2, 9, 0]  # the shift's class j is training class shift_classes[j]
    keep = np.isin(y_s, shift_classes)
    y_shift = np.array([shift_classes.index(v) for v in y_s[keep]])
    data = {
        "train": Bunch(data=X, target=y, target_names=names),
        "id": Bunch(data=X_id, target=y_id, target_names=names),
        "shift": Bunch(
            data=X_s[keep], target=y_shift, target_names=[names[c] for c in shift_classes]
        ),
    }
    results = evaluate_robustness(
        data["train"], {"drift": data["shift"]}, id_test=data["id"], C=[1.0], progress=False
    )
    return results, data, shift_classes


def test_shift_predictions_are_the_argmax_over_its_classes(toy_results):
    from skicm.evaluation import make_linear_probe

    results, data, shift_classes = toy_results
    # One candidate: the chosen model is the probe fitted on every training row.
    probe = make_linear_probe(1.0).fit(data["train"].data, data["train"].target)
    scores = probe.decision_function(data["shift"].data)
    expected = np.argmax(scores[:, shift_classes], axis=1)  # computed here, by hand
    accuracy = np.mean(expected == data["shift"].target)
    assert results.accuracy("linear probe", "drift")[0] == pytest.approx(accuracy, abs=1e-12)
    # the restriction matters here: the unrestricted argmax is often class 5
    unrestricted = probe.predict(data["shift"].data)
    wrong = np.mean(unrestricted != np.asarray(shift_classes)[data["shift"].target])
    assert wrong > 1 - accuracy + 0.2
    id_accuracy = np.mean(probe.predict(data["id"].data) == data["id"].target)
    assert results.accuracy("linear probe", "imagenet")[0] == pytest.approx(id_accuracy)
    record = next(r for r in results.records if r["test_set"] == "drift")
    assert (record["n_classes"], record["n_test"], record["distribution"]) == (4, 160, "OOD")


def test_shift_class_names_must_be_training_classes(toy_results):
    _, data, _ = toy_results
    shift = Bunch(data=data["shift"].data, target=data["shift"].target,
                  target_names=["class 7", "zebra", "class 9", "class 0"])  # fmt: skip
    with pytest.raises(ValueError, match=r"shift 'odd' has classes \['zebra'\]"):
        evaluate_robustness(data["train"], {"odd": shift}, id_test=data["id"], progress=False)
    with pytest.raises(ValueError, match="variant_classes maps shift 'imagenet-r' into "
                                         "ImageNet-1k's 1000 classes, but the training data "
                                         "have 10"):  # fmt: skip
        evaluate_robustness(data["train"], {"imagenet-r": data["shift"]}, id_test=data["id"],
                            variant_classes=True, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"interventions='groups'.*one domain"):
        evaluate_robustness(data["train"], {"drift": data["shift"]}, id_test=data["id"],
                            interventions=["groups"], progress=False)  # fmt: skip


def test_a_shared_name_gathers_every_training_class():
    names = ["missile", "cat", "missile"]
    mapping = _class_map("s", Bunch(target_names=["missile", "cat"]), names, 3, False)
    assert mapping == [[0, 2], [1]]


# ------------------------------------------------------------------------- effective robustness
def _results(points, chosen, shifts=("a", "b"), **kwargs):
    """RobustnessResults of one method from (ID, shift a, shift b) accuracies."""
    records, candidates = [], []
    for test_set, value in zip(("imagenet", *shifts), chosen):
        records.append({"method": "probe", "seed": 0, "test_set": test_set, "accuracy": value,
                        "n_test": 100, "n_classes": 10, "chosen": "{}", "n_train": 50})  # fmt: skip
    for k, values in enumerate(points):
        for test_set, value in zip(("imagenet", *shifts), values):
            candidates.append({"method": "probe", "seed": 0, "candidate": str(k),
                               "test_set": test_set, "accuracy": value})  # fmt: skip
    return RobustnessResults(
        records=records, candidates=candidates, methods=["probe"], id_name="imagenet",
        shifts=list(shifts), baseline="probe", chance={"imagenet": 0.1, "a": 0.1, "b": 0.1},
        **kwargs,
    )  # fmt: skip


POINTS = [(0.55, 0.30, 0.20), (0.70, 0.42, 0.35), (0.80, 0.50, 0.41), (0.62, 0.33, 0.31)]


def test_effective_robustness_against_a_hand_computed_logit_fit():
    results = _results(POINTS, (0.75, 0.52, 0.40))

    def lg(p):
        return np.log(p / (1 - p))

    x = lg(np.array([p[0] for p in POINTS]))
    y = lg(np.array([(p[1] + p[2]) / 2 for p in POINTS]))
    # ordinary least squares in closed form
    slope = np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2)
    intercept = y.mean() - slope * x.mean()
    # Tolerance: float64 sums of 4 terms of size < 10 and a least-squares solve with a
    # condition number below 10 lose at most a few units of 1e-16 relative; 1e-9 is far above.
    assert results.line("probe") == pytest.approx((slope, intercept), abs=1e-9)
    expected = 100 * ((0.52 + 0.40) / 2 - 1 / (1 + np.exp(-(slope * lg(0.75) + intercept))))
    assert results.effective_robustness("probe") == pytest.approx(expected, abs=1e-9)
    # per shift, with that shift's own line
    ys = lg(np.array([p[2] for p in POINTS]))
    slope_b = np.sum((x - x.mean()) * (ys - ys.mean())) / np.sum((x - x.mean()) ** 2)
    intercept_b = ys.mean() - slope_b * x.mean()
    expected_b = 100 * (0.40 - 1 / (1 + np.exp(-(slope_b * lg(0.75) + intercept_b))))
    assert results.effective_robustness("probe", "b") == pytest.approx(expected_b, abs=1e-9)
    # a given reference line replaces the baseline's
    given = _results(POINTS, (0.75, 0.52, 0.40), reference_line=(0.9, -0.6))
    expected = 100 * (0.46 - 1 / (1 + np.exp(-(0.9 * lg(0.75) - 0.6))))
    assert given.effective_robustness("probe") == pytest.approx(expected, abs=1e-9)


def test_no_line_through_one_id_accuracy():
    assert fit_logit_line([0.5, 0.5], [0.2, 0.3]) is None
    results = _results([(0.6, 0.3, 0.3)], (0.6, 0.3, 0.3))
    assert np.isnan(results.effective_robustness("probe"))
    markdown = results.to_markdown()
    assert "| probe | 60.0 | 30.0 | 30.0 | 30.0 | - |" in markdown
    assert (
        "Note: no baseline line through the candidates of 'probe': its 1 distinct model(s) "
        "score 60.0 % on imagenet, and a line needs two ID accuracies" in markdown
    )
    assert "no baseline line" not in _results(POINTS, (0.75, 0.52, 0.40)).to_markdown()
    assert (
        "no baseline line"
        not in _results([(0.6, 0.3, 0.3)], (0.6, 0.3, 0.3), reference_line=(1.0, 0.0)).to_markdown()
    )
    absent = _results(POINTS, (0.75, 0.52, 0.40))
    absent.baseline = "zero-shot"
    assert "Note: no baseline line: the baseline method 'zero-shot' was not run" in (
        absent.to_markdown()
    )


def test_candidates_that_fit_one_model_are_one_point():
    """Ranks above the data's rank fit the same model: one point of the line, not several
    (which would weigh that model more in the least squares)."""
    results = _results(POINTS, (0.75, 0.52, 0.40))
    for record in results.candidates:  # candidates 2 and 3 fitted one model
        record["model"] = "shared" if record["candidate"] in ("2", "3") else record["candidate"]
    id_values, ood_values = results.points("probe")
    assert len(id_values) == 3
    # The shared model's point is the mean of its records (here candidates 2 and 3's).
    shared = [0.5 * (POINTS[2][i] + POINTS[3][i]) for i in range(3)]
    assert sorted(id_values.tolist()) == sorted([POINTS[0][0], POINTS[1][0], shared[0]])
    index = id_values.tolist().index(shared[0])
    assert ood_values[index] == pytest.approx((shared[1] + shared[2]) / 2, abs=1e-15)


def test_plot_is_logit_with_percent_ticks_and_lines_through_the_points():
    import matplotlib

    matplotlib.use("Agg")
    two = [(0.6, 0.35, 0.25), (0.8, 0.5, 0.44)]
    results = _results(two, (0.7, 0.45, 0.30))
    figure = plot_effective_robustness(results, reference_line=(1.0, -1.0))
    ax = figure.axes[0]
    assert ax.get_xscale() == "logit" and ax.get_yscale() == "logit"
    figure.canvas.draw()
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        texts = [label.get_text() for label in labels if label.get_text()]
        assert texts and all(re.fullmatch(r"[\d.]+%", t) for t in texts), texts
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert {"probe line", "y = x", "reference line"} <= set(lines)

    def lg(p):
        return np.log(p / (1 - p))

    slope, intercept = results.line("probe")
    x, y = lines["probe line"].get_data()
    # Two points: the line passes through both (float64 logit of values in (0.01, 0.99):
    # relative error ~1e-15; 1e-9 leaves room for the exp/log round trips of the plot).
    for px, py in zip([p[0] for p in two], [(p[1] + p[2]) / 2 for p in two]):
        assert slope * lg(px) + intercept == pytest.approx(lg(py), abs=1e-9)
    assert np.allclose(lg(y), slope * lg(x) + intercept, atol=1e-9)  # straight in logit space
    x, y = lines["reference line"].get_data()
    assert np.allclose(lg(y), lg(x) - 1.0, atol=1e-9)
    x, y = lines["y = x"].get_data()
    assert np.allclose(x, y)


@pytest.mark.parametrize(
    "points",
    [
        [(0.6, 0.35, 0.25), (0.8, 0.5, 0.44)],  # mid range: many candidate ticks
        [(0.9, 0.9, 0.93), (0.999, 0.95, 0.99)],  # near 100 %: ticks crowd in logit space
    ],
)
def test_plot_tick_labels_never_touch(points):
    """Every tick label of both axes, as drawn, clear of its neighbours; the line stays
    straight up to where it is drawn (no flat end where logit() clips)."""
    import matplotlib

    matplotlib.use("Agg")
    figure = plot_effective_robustness(_results(points, (0.7, 0.45, 0.30)))
    ax = figure.axes[0]
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    for labels, along in ((ax.get_xticklabels(), 0), (ax.get_yticklabels(), 1)):
        boxes = sorted(
            (label.get_window_extent(renderer) for label in labels if label.get_text()),
            key=lambda box: box.get_points()[0][along],
        )
        assert len(boxes) >= 3
        for first, second in itertools.pairwise(boxes):
            assert first.get_points()[1][along] < second.get_points()[0][along]
    x, y = {line.get_label(): line for line in ax.get_lines()}["probe line"].get_data()
    slopes = np.diff(np.log(y / (1 - y))) / np.diff(np.log(x / (1 - x)))
    assert np.allclose(slopes, slopes[0], rtol=1e-6)


# ------------------------------------------------------------------------------ the files
def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_every_csv_and_markdown_cell(toy_results, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    results, _, _ = toy_results
    paths = results.save(tmp_path, title="toy")
    assert [p.name for p in paths] == ["results.csv", "candidates.csv", "results.md",
                                       "results.png"]  # fmt: skip
    rows = _read_csv(tmp_path / "results.csv")
    assert rows[0] == list(ROBUSTNESS_COLUMNS)
    assert len(rows) == 3  # one method, one seed, two test sets
    for row in rows[1:]:
        cells = dict(zip(rows[0], row))
        record = next(r for r in results.records if r["test_set"] == cells["test_set"])
        assert cells["method"] == "linear probe" and cells["seed"] == "0"
        assert float(cells["accuracy"]) == pytest.approx(record["accuracy"], rel=1e-5)
        assert cells["distribution"] == {"imagenet": "ID", "drift": "OOD"}[cells["test_set"]]
        assert cells["n_test"] == {"imagenet": "200", "drift": "160"}[cells["test_set"]]
        assert cells["n_classes"] == {"imagenet": "10", "drift": "4"}[cells["test_set"]]
        # one candidate: no choice was made, no scoring, no validation score
        assert (cells["scoring"], cells["validation_score"], cells["n_candidates"]) == ("", "", "1")
        assert json.loads(cells["chosen"]) == {"C": 1.0} and cells["C"] == "1"
        assert cells["n_components"] == cells["n_components_fitted"] == cells["alpha"] == ""
        assert cells["n_train"] == "300"
    assert _read_csv(tmp_path / "candidates.csv") == [list(CANDIDATE_COLUMNS)]  # no grid
    markdown = (tmp_path / "results.md").read_text()
    id_acc, drift = (100 * results.accuracy("linear probe", t)[0] for t in ("imagenet", "drift"))
    assert f"| linear probe | {id_acc:.1f} | {drift:.1f} | {drift:.1f} | - |" in markdown
    assert "Test accuracy (%), 1 seed (0);" in markdown
    assert "| imagenet | 200 | 10 | 10.0 |" in markdown
    assert "| drift | 160 | 4 | 25.0 |" in markdown
    assert '| linear probe | {"C": 1.0} |' in markdown
    assert markdown.startswith("## toy\n")
    assert (tmp_path / "results.png").stat().st_size > 0


# ------------------------------------------------------------------------------ the command
def _image(colour, rng, fmt):
    from PIL import Image

    pixels = np.clip(np.asarray(colour) + rng.integers(-20, 21, (32, 32, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def _write_mirror(root, name, split, class_names, samples, rng):
    """CLIP_benchmark's layout: ``wds_<name>/{split}/{n}.tar`` and ``classnames.txt``."""
    folder = root / f"wds_{name}"
    (folder / split).mkdir(parents=True, exist_ok=True)
    (folder / "classnames.txt").write_text("\n".join(class_names) + "\n")
    (folder / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    halves = [samples[: len(samples) // 2], samples[len(samples) // 2 :]]
    for shard, chunk in enumerate(halves):
        with tarfile.open(folder / split / f"{shard}.tar", "w") as tar:
            for index, (label, colour) in enumerate(chunk):
                key = f"s{shard:02d}{index:05d}"
                for member, data in ((f"{key}.webp", _image(colour, rng, "WEBP")),
                                     (f"{key}.cls", str(label).encode())):  # fmt: skip
                    info = tarfile.TarInfo(member)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def _page_command():
    """The ``skicm evaluate ... --protocol robustness`` command of docs/robustness.md."""
    page = (ROOT / "docs" / "robustness.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", page, flags=re.DOTALL)
    commands = [b for b in blocks if "--protocol robustness" in b]
    assert len(commands) == 1
    return shlex.split(commands[0].replace("\\\n", " "))


def test_the_pages_command_on_generated_shards(tmp_path, tiny_clip_name, monkeypatch, capsys):
    """The page's command, on shards in the mirrors' layout, with a tiny random model."""
    import matplotlib

    from skicm.cli import main

    matplotlib.use("Agg")
    argv = _page_command()
    assert argv[:2] == ["skicm", "evaluate"]
    rng = np.random.default_rng(0)
    full = imagenet_variant("imagenet1k").target_names
    r = imagenet_variant("imagenet-r")
    a = imagenet_variant("imagenet-a")
    objectnet = imagenet_variant("objectnet")
    in_r = {ids[0] for ids in r.imagenet_classes}
    in_a = {ids[0] for ids in a.imagenet_classes}
    trained = [*sorted(in_r & in_a)[:2], 409, 530, 954]  # 409/530: ObjectNet's alarm clock
    colours = {c: rng.integers(0, 256, 3) for c in trained}

    def samples(per_class, label_of):
        return [(label_of(c), colours[c]) for c in trained for _ in range(per_class)
                if label_of(c) is not None]  # fmt: skip

    def index_in(variant):
        def label(c):
            matches = [j for j, ids in enumerate(variant.imagenet_classes) if c in ids]
            return matches[0] if matches else None

        return label

    _write_mirror(tmp_path, "imagenet1k", "train", full, samples(5, int), rng)
    _write_mirror(tmp_path, "imagenet1k", "test", full, samples(2, int), rng)
    _write_mirror(tmp_path, "imagenetv2", "test", full, samples(2, int), rng)
    _write_mirror(tmp_path, "imagenet_sketch", "test", full, samples(2, int), rng)
    _write_mirror(tmp_path, "imagenet-r", "test", r.target_names, samples(2, index_in(r)), rng)
    _write_mirror(tmp_path, "imagenet-a", "test", a.target_names, samples(2, index_in(a)), rng)
    _write_mirror(tmp_path, "objectnet", "test", objectnet.target_names,
                  samples(2, index_in(objectnet)), rng)  # fmt: skip
    # The page's command; the encoder is the tiny random model, one seed, one prompt.
    encoder = argv.index("--model-name")
    argv[encoder : encoder + 4] = ["--model-name", tiny_clip_name, "--pretrained", "none"]
    seeds = argv.index("--seeds")
    argv[seeds + 1] = "1"
    argv += ["--device", "cpu", "--templates", "a photo of a {}.", "--no-progress",
             "--C", "0.1", "1", "--n-components", "4", "--alpha", "1", "--n-jobs", "1",
             "--interventions", "image"]  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert main(argv[1:]) == 0
    out = capsys.readouterr().out
    assert "training: 25 images, 1000 classes" in out
    rows = _read_csv(tmp_path / "robustness-results" / "results.csv")
    header, body = rows[0], rows[1:]
    sets = ["imagenet", "imagenetv2", "imagenet_sketch", "imagenet-r", "imagenet-a", "objectnet"]
    methods = ["zero-shot", "zero-shot ICM (image)", "linear probe", "linear probe ICM (image)"]
    got = [(row[header.index("method")], row[header.index("test_set")]) for row in body]
    assert got == [(m, s) for m in methods for s in sets]
    n_classes = {"imagenet": 1000, "imagenetv2": 1000, "imagenet_sketch": 1000,
                 "imagenet-r": 200, "imagenet-a": 200, "objectnet": 113}  # fmt: skip
    n_test = {"imagenet": 10, "imagenetv2": 10, "imagenet_sketch": 10,
              "imagenet-r": 2 * len(in_r & set(trained)),
              "imagenet-a": 2 * len(in_a & set(trained)),
              "objectnet": 6}  # fmt: skip
    for row in body:
        cells = dict(zip(header, row))
        assert int(cells["n_classes"]) == n_classes[cells["test_set"]]
        assert int(cells["n_test"]) == n_test[cells["test_set"]]
        assert 0 <= float(cells["accuracy"]) <= 1
        assert cells["n_train"] == "25"
    markdown = (tmp_path / "robustness-results" / "results.md").read_text()
    assert "| method | imagenet (ID) | imagenetv2 | imagenet_sketch | imagenet-r | imagenet-a " \
           "| objectnet | avg OOD | ER |" in markdown  # fmt: skip
    assert "trained on 25 training images (up to 16 per class)" in markdown
    assert "prompted as ['missile (2)', 'sunglasses (2)']" in markdown  # ImageNet repeats two
    assert (tmp_path / "robustness-results" / "results.png").stat().st_size > 0
    assert (tmp_path / "imagenet-embeddings.sqlite").is_file()
    # Again from the store, the probe alone, against a given reference line, with --plot.
    again = [*argv[1:], "--methods", "linear probe", "--reference-line", "0.8", "-0.4",
             "--output", "again", "--plot", "plot.png"]  # fmt: skip
    assert main(again) == 0
    markdown = (tmp_path / "again" / "results.md").read_text()
    assert "the given reference line (slope 0.8, intercept -0.4)" in markdown
    id_accuracy = float(next(r for r in _read_csv(tmp_path / "again" / "results.csv")
                             if r[1] == "0" and r[2] == "imagenet")[4])  # fmt: skip
    ood = np.mean([float(r[4]) for r in _read_csv(tmp_path / "again" / "results.csv")[1:]
                   if r[2] != "imagenet"])  # fmt: skip
    p = min(max(id_accuracy, 0.001), 0.999)  # accuracies are clipped before the logit
    line = 1 / (1 + np.exp(-(0.8 * np.log(p / (1 - p)) - 0.4)))
    assert f"| linear probe | {100 * id_accuracy:.1f} |" in markdown
    assert f"{100 * (ood - line):+.1f} |" in markdown.split("| linear probe |")[1].splitlines()[0]
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_few_shot_draws_per_seed(toy_results):
    from skicm.evaluation._robustness import _few_shot_rows

    y = np.repeat(np.arange(4), [5, 5, 5, 2])
    rows = _few_shot_rows(y, 3, seed=0)
    assert np.bincount(y[rows]).tolist() == [3, 3, 3, 2]  # all of a class with fewer
    assert np.array_equal(rows, np.sort(rows)) and len(set(rows.tolist())) == len(rows)
    assert np.array_equal(rows, _few_shot_rows(y, 3, seed=0))
    assert not np.array_equal(rows, _few_shot_rows(y, 3, seed=1))
    _, data, _ = toy_results
    results = evaluate_robustness(
        data["train"], {"drift": data["shift"]}, id_test=data["id"], shots=3, seeds=[0, 1],
        C=[1.0], progress=False,
    )  # fmt: skip
    assert {r["n_train"] for r in results.records} == {30}
    per_seed = [r["accuracy"] for r in results.records if r["test_set"] == "imagenet"]
    assert per_seed[0] != per_seed[1]  # two draws, two probes
    mean, std = results.accuracy("linear probe", "imagenet")
    assert (mean, std) == pytest.approx((np.mean(per_seed), np.std(per_seed)))
    assert f"| linear probe | {100 * mean:.1f} ± {100 * std:.1f} |" in results.to_markdown()
    assert "trained on 30 training images (up to 3 per class)" in results.to_markdown()
    assert "Test accuracy (%), mean ± std over 2 seeds (0, 1);" in results.to_markdown()


def test_a_family_line_across_results_goes_through_each_chosen_model():
    import matplotlib

    matplotlib.use("Agg")

    def lg(p):
        return np.log(p / (1 - p))

    small = _results([], (0.55, 0.30, 0.26))  # no grid: one point per result (per encoder)
    large = _results([], (0.75, 0.52, 0.48))
    assert small.line("probe") is None
    figure = plot_effective_robustness([small, large])
    line = next(li for li in figure.axes[0].get_lines() if li.get_label() == "probe line")
    x, y = line.get_data()
    slope = (lg(0.50) - lg(0.28)) / (lg(0.75) - lg(0.55))
    intercept = lg(0.28) - slope * lg(0.55)
    assert np.allclose(lg(y), slope * lg(x) + intercept, atol=1e-9)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--shift", "imagenet-r=r.tar"], "needs --id-test SOURCE"),
        (["--id-test", "t.tar"], "needs at least one --shift NAME=SOURCE"),
        (["--id-test", "t.tar", "--shift", "a=x.tar", "--shift", "a=y.tar"],
         "--shift names 'a' more than once"),
        (["--id-test", "t.tar", "--shift", "a=x.tar", "--selection", "oracle"],
         "--selection oracle needs training domains"),
        (["--id-test", "t.tar", "--shift", "a=x.tar", "--test-domains", "x"],
         "--test-domains applies to the other protocols"),
        (["--id-test", "t.tar", "--shift", "a=x.tar"], "give an encoder"),
    ],
)  # fmt: skip
def test_command_errors_name_the_option(options, message, capsys):
    from skicm.cli import main

    assert main(["evaluate", "train.tar", "--protocol", "robustness", *options]) == 2
    assert message in capsys.readouterr().err


def test_shift_must_be_name_equals_source(capsys):
    from skicm.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "t.tar", "--protocol", "robustness", "--shift", "imagenet-r"])
    assert "must be NAME=SOURCE" in capsys.readouterr().err


def test_a_source_that_is_no_collection_is_named(tmp_path, tiny_clip_name, capsys):
    from skicm.cli import main

    argv = ["evaluate", str(tmp_path), "--protocol", "robustness", "--id-test", "t.tar",
            "--shift", "a=x.tar", "--model-name", tiny_clip_name,
            "--pretrained", "none"]  # fmt: skip
    assert main(argv) == 2
    assert f"SOURCE {str(tmp_path)!r} is neither WebDataset shards" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_clip_embedder():
    from skicm import CLIPEmbedder
    from skicm.model_configs import register_tiny_clip

    return CLIPEmbedder(register_tiny_clip(), pretrained=None, device="cpu", progress=False)


def test_zero_shot_prompts_a_shifts_own_class_names(tiny_clip_embedder):
    """As CLIP_benchmark scores ObjectNet: zero-shot classifies a shift among its own names
    ("kitten", "puppy") when they are not the training classes' names; a shift named as
    training classes keeps the training prompts, restricted to its classes."""
    from skicm.zero_shot import ZeroShotClassifier

    rng = np.random.default_rng(3)
    names = ["cat", "dog", "bird", "fish"]

    def images(n):
        return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 4

    (X, y), (X_id, y_id), (X_s, _) = images(24), images(16), images(30)
    # A random tiny model gives every image almost the same embedding, so each way of
    # classifying picks one class for all: with 2 of 3 images in class 0, the two ways'
    # accuracies differ unless their predictions agree.
    truth = np.arange(30) % 3 // 2
    shifts = {
        "renamed": Bunch(images=X_s, target=truth, target_names=["kitten", "puppy"],
                         train_classes=[[0], [1]]),
        "same": Bunch(images=X_s, target=1 - truth, target_names=["dog", "cat"]),
    }  # fmt: skip
    results = evaluate_robustness(
        Bunch(images=X, target=y, target_names=names), shifts,
        id_test=Bunch(images=X_id, target=y_id, target_names=names),
        embedder=tiny_clip_embedder, methods=["zero-shot"], templates="openai-imagenet",
        progress=False,
    )  # fmt: skip
    Z = tiny_clip_embedder.transform(X_s)

    def zero_shot(class_names):
        clf = ZeroShotClassifier(class_names, encoder=tiny_clip_embedder)
        return clf.fit(Z[:1]).similarity(Z)

    own = np.mean(np.argmax(zero_shot(["kitten", "puppy"]), axis=1) == truth)
    restricted = np.mean(np.argmax(zero_shot(names)[:, :2], axis=1) == truth)
    assert own != restricted  # the two ways differ on these images: the test can tell them
    assert results.accuracy("zero-shot", "renamed")[0] == pytest.approx(own, abs=1e-12)
    same = np.mean(np.argmax(zero_shot(names)[:, [1, 0]], axis=1) == 1 - truth)
    assert results.accuracy("zero-shot", "same")[0] == pytest.approx(same, abs=1e-12)
    notes = " ".join(results.notes)
    assert "the zero-shot classifiers prompt the 2 class names of 'renamed'" in notes
    assert "'same'" not in notes
