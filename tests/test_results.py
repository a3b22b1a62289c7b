"""What the results of a protocol run write: results.csv (every cell is the value its column
names), results.md (every cell under its own row and domain heading; test sizes, seeds and the
searched grid shown) and results.png."""

import csv

import numpy as np
import pytest
from sklearn.utils import Bunch

from skicm.evaluation import (
    RESULT_COLUMNS,
    EvaluationResults,
    evaluate_domain_generalization,
    make_linear_probe,
)
from skicm.model_selection import TrainingDomainSplit

DOMAINS = ["art", "photo", "sketch"]
N_TEST = {"art": 8, "photo": 10, "sketch": 5}


def _record(method, domain, seed, accuracy, **values):
    """A record of results.csv whose every column holds a value no other column holds."""
    record = {
        "method": method, "test_domain": domain, "seed": seed, "accuracy": accuracy,
        "classes": "all", "n_components": 4, "n_components_fitted": 3, "alpha": 10.0,
        "C": 0.25, "selection": "training-domain", "scoring": "interventional",
        "validation_score": 0.123456, "n_candidates": 6, "n_train": 77,
        "n_test": N_TEST[domain],
    }  # fmt: skip
    record.update(values)
    return record


def _accuracy(correct, domain):
    return correct / N_TEST[domain]


@pytest.fixture
def two_seeds():
    """Two methods, three domains, two seeds; each accuracy a different count of correct
    images, so that a cell under the wrong heading, row or seed shows a different number."""
    records = []
    for m, method in enumerate(["probe", "probe ICM (groups)"]):
        for d, domain in enumerate(DOMAINS):
            for seed in (0, 1):
                correct = (m + 2 * d + 3 * seed) % (N_TEST[domain] + 1)
                records.append(
                    _record(
                        method,
                        domain,
                        seed,
                        _accuracy(correct, domain),
                        validation_score=0.5 + 0.01 * (m + d + seed),
                        n_train=20 + d,
                        alpha=None if m == 0 else 1.0 + seed,
                        n_components=None if m == 0 else 4,
                        n_components_fitted=None if m == 0 else 3 + seed,
                        C=0.1 * (1 + d),
                    )
                )
    grids = {
        "probe": [{"C": 0.1}, {"C": 0.2}, {"C": 0.3}],
        "probe ICM (groups)": [
            {"n_components": k, "alpha": a, "C": c}
            for k in ("auto", 4) for a in (1.0, 2.0) for c in (0.1, 0.2, 0.3)
        ],
    }  # fmt: skip
    return EvaluationResults(
        records, ["probe", "probe ICM (groups)"], DOMAINS, selection="training-domain",
        scoring="interventional", chance=0.25, grids=grids,
    )  # fmt: skip


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _cell_value(text, expected):
    """The value of a CSV cell of the column whose record value is ``expected``."""
    if expected is None:
        return None if text == "" else text
    if isinstance(expected, bool) or isinstance(expected, str):
        return text
    if isinstance(expected, int):
        return int(text)
    return float(text)


def _assert_csv_holds_the_records(path, records):
    rows = _read_csv(path)
    assert len(rows) == len(records)
    for row, record in zip(rows, records):
        assert list(row) == list(RESULT_COLUMNS)
        for column in RESULT_COLUMNS:
            expected, value = record[column], _cell_value(row[column], record[column])
            if isinstance(expected, float):
                # Written with 6 significant digits: a relative error of at most 5e-6.
                assert value == pytest.approx(expected, rel=5e-6), (column, row)
            else:
                assert value == expected, (column, row)


def test_every_csv_cell_is_the_value_of_its_column(two_seeds, tmp_path):
    # Every column of a record holds its own value: a column written under another's name
    # (accuracy and validation_score swapped, say) differs in some cell.
    for record in two_seeds.records:
        numbers = [record[c] for c in RESULT_COLUMNS if isinstance(record[c], float)]
        assert record["accuracy"] != record["validation_score"] and len(numbers) >= 3
    _assert_csv_holds_the_records(two_seeds.to_csv(tmp_path / "results.csv"), two_seeds.records)


def _table(markdown):
    """The accuracy table of results.md: header cells, then {row label: cells}."""
    lines = markdown.split("\n\n")
    block = next(part for part in lines if part.startswith("| method |"))
    rows = [line.strip("|").split("|") for line in block.splitlines()]
    header = [cell.strip() for cell in rows[0]]
    assert set(rows[1]) <= {"---", "---:"}
    return header, {row[0].strip(): [cell.strip() for cell in row[1:]] for row in rows[2:]}


def _mean_std(values):
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def test_every_markdown_cell_is_under_its_row_and_domain(two_seeds):
    header, table = _table(two_seeds.to_markdown())
    assert header == ["method", *DOMAINS, "Average"]
    assert list(table) == ["probe", "probe ICM (groups)", "n_test"]
    for method in two_seeds.methods:
        cells = dict(zip(header[1:], table[method]))
        by = {(r["test_domain"], r["seed"]): r["accuracy"] for r in two_seeds.records
              if r["method"] == method}  # fmt: skip
        for domain in DOMAINS:
            assert cells[domain] == _mean_std([by[domain, 0], by[domain, 1]]), (method, domain)
        # The average over domains is taken per seed, then over seeds (as DomainBed does).
        per_seed = [np.mean([by[d, seed] for d in DOMAINS]) for seed in (0, 1)]
        assert cells["Average"] == _mean_std(per_seed), method
    assert dict(zip(header[1:], table["n_test"])) == {
        "art": "8", "photo": "10", "sketch": "5", "Average": "23"
    }  # fmt: skip
    markdown = two_seeds.to_markdown()
    assert "mean ± std over 2 seeds (0, 1)" in markdown and "1 seed" not in markdown
    # The smallest held-out domain says what one image is worth.
    assert "One image is 20.0 points of accuracy on sketch (5 test images)." in markdown


def test_one_seed_says_so_with_the_counts_instead_of_a_zero_std():
    records = [
        _record("probe", domain, 7, _accuracy(correct, domain))
        for domain, correct in [("art", 2), ("photo", 0), ("sketch", 5)]
    ]
    results = EvaluationResults(records, ["probe"], DOMAINS, "training-domain", "accuracy", 0.5)
    markdown = results.to_markdown()
    header, table = _table(markdown)
    assert dict(zip(header[1:], table["probe"])) == {
        "art": "25.0 (2/8, 1 seed)",
        "photo": "0.0 (0/10, 1 seed)",  # 0.0 is none of 10 images, not of 1,000
        "sketch": "100.0 (5/5, 1 seed)",
        "Average": f"{100 * np.mean([2 / 8, 0, 1]):.1f} (1 seed)",
    }
    assert "±" not in markdown.split("Searched grid")[0]
    assert "from 1 seed (7), so without a standard deviation" in markdown
    plt = pytest.importorskip("matplotlib.pyplot")
    figure = results.plot()
    assert "1 seed (7), no error bars" in figure.axes[0].get_title()
    plt.close(figure)


def test_cells_with_fewer_seeds_than_the_table_say_how_many():
    """The open-class protocol: a seed whose held-out domain has no new-class image gives no
    new-class record; its cells say they come from fewer seeds, with their own test sizes."""
    records = []
    for seed, n_new in [(0, 4), (1, 0), (2, 6)]:
        records.append(_record("zero-shot", "art", seed, 0.5, classes="base", n_test=8))
        if n_new:
            records.append(_record("zero-shot", "art", seed, 0.25 * seed, classes="new",
                                   n_test=n_new))  # fmt: skip
    results = EvaluationResults(
        records, ["zero-shot"], ["art"], "training-domain", "accuracy", 0.5,
        protocol="open-class",
    )  # fmt: skip
    header, table = _table(results.to_markdown())
    assert header == ["method", "art", "Average"]
    assert table["zero-shot [base classes]"] == ["50.0 ± 0.0", "50.0 ± 0.0"]
    new = _mean_std([0.0, 0.5]) + " (2 of 3 seeds)"
    assert table["zero-shot [new classes]"] == [new, new]
    # Average: the test images of all held-out domains of a seed (here the one domain).
    assert table["n_test [base classes]"] == ["8", "8"]
    assert table["n_test [new classes]"] == ["4-6", "4-6"]
    one = EvaluationResults(
        [r for r in records if r["seed"] == 0] + [_record("zero-shot", "art", 1, 0.5,
                                                          classes="base", n_test=8)],
        ["zero-shot"], ["art"], "training-domain", "accuracy", 0.5, protocol="open-class",
    )  # fmt: skip
    _, table = _table(one.to_markdown())
    assert table["zero-shot [new classes]"] == ["0.0 (0/4, 1 of 2 seeds)", "0.0 (1 of 2 seeds)"]


def test_the_searched_grid_is_listed(two_seeds):
    markdown = two_seeds.to_markdown()
    section = markdown.split("Searched grid")[1].split("Chosen hyperparameters")[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert rows[0] == "| method | candidates | n_components | alpha | C |"
    assert rows[2:] == [
        "| probe | 3 | - | - | 0.1, 0.2, 0.3 |",
        "| probe ICM (groups) | 12 | auto, 4 | 1, 2 | 0.1, 0.2, 0.3 |",
    ]
    assert "training-domain validation chose one candidate" in section
    # Without a recorded grid (results built by other code): the number of candidates.
    bare = EvaluationResults(two_seeds.records, two_seeds.methods, DOMAINS, "oracle",
                             "accuracy", 0.25)  # fmt: skip
    section = bare.to_markdown().split("Searched grid")[1].split("Chosen hyperparameters")[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    assert rows == ["| method | candidates |", "|---|---:|", "| probe | 6 |",
                    "| probe ICM (groups) | 6 |"]  # fmt: skip
    assert "not recorded" in section and "oracle" in section


def test_save_writes_the_three_files(two_seeds, tmp_path):
    pytest.importorskip("matplotlib")
    paths = two_seeds.save(tmp_path / "out", title="mini")
    assert [p.name for p in paths] == ["results.csv", "results.md", "results.png"]
    _assert_csv_holds_the_records(paths[0], two_seeds.records)
    assert paths[1].read_text() == two_seeds.to_markdown(title="mini")
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def protocol_run():
    """A real run on raw features: three domains of 60 rows, a grid of two C values."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    n = 180
    y = rng.integers(0, 2, n)
    data = Bunch(data=np.c_[2 * y - 1 + rng.normal(0, 1.5, n), rng.normal(0, 1, (n, 2))],
                 target=y, domains=np.repeat(["a", "b", "c"], n // 3))  # fmt: skip
    with threadpool_limits(1):
        results = evaluate_domain_generalization(
            data, methods=["linear probe"], C=[0.001, 1.0], seeds=[3, 5], progress=False
        )
    return data, results


def test_a_protocol_run_writes_what_its_columns_name(protocol_run, tmp_path):
    """accuracy is the refitted probe's score on the held-out domain and validation_score
    the chosen candidate's score on the training-domain validation rows, each recomputed
    here, cell by cell; results.md holds the CSV's numbers under their headings."""
    data, results = protocol_run
    X, y, domains = data.data, data.target, data.domains
    path = results.to_csv(tmp_path / "results.csv")
    _assert_csv_holds_the_records(path, results.records)
    rows = _read_csv(path)
    assert len(rows) == 3 * 2
    for row in rows:
        train, test = np.flatnonzero(domains != row["test_domain"]), domains == row["test_domain"]
        probe = make_linear_probe(float(row["C"])).fit(X[train], y[train])
        assert float(row["accuracy"]) == pytest.approx(probe.score(X[test], y[test]), abs=1e-6)
        assert int(row["n_test"]) == test.sum() and int(row["n_train"]) == len(train)
        split = TrainingDomainSplit(test_size=0.2, random_state=int(row["seed"]))
        ((fit, validation),) = split.split(X[train], y[train], groups=domains[train])
        chosen = make_linear_probe(float(row["C"])).fit(X[train[fit]], y[train[fit]])
        expected = chosen.score(X[train[validation]], y[train[validation]])
        assert float(row["validation_score"]) == pytest.approx(expected, abs=1e-6)
        assert row["n_candidates"] == "2" and row["scoring"] == "accuracy"
    header, table = _table(results.to_markdown())
    for domain in ["a", "b", "c"]:
        values = [float(r["accuracy"]) for r in rows if r["test_domain"] == domain]
        assert table["linear probe"][header.index(domain) - 1] == _mean_std(values)
    assert table["n_test"] == ["60", "60", "60", "180"]
    section = results.to_markdown().split("Searched grid")[1]
    # The values where the protocol records its grid, else the number of candidates.
    row = "| linear probe | 2 | 0.001, 1 |" if results.grids else "| linear probe | 2 |"
    assert row in section.splitlines()
