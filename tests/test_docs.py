"""Every code block of README.md and docs/*.md runs as written, and says what it claims.

How the pages are run
---------------------
- ``python`` blocks of one page run in order in one namespace (later blocks use names of
  earlier ones), in an empty temporary working directory, in scikit-learn's default
  configuration (metadata routing off); a block that switches routing on does so itself, and
  the configuration is restored after the page.
- ``bash`` blocks run when every command in them is a ``skicm`` command: each runs as
  ``python -m skicm ...`` (same interpreter) in that directory and must exit with status 0.
- Markers are HTML comments on the line right before a fence (invisible on GitHub and in the
  Sphinx site):

  - ``<!-- docs-test: skip (reason) -->``: the block is not run. Only for a block that cannot
    run here (it needs the internet, a GPU, the reader's own files, or it installs packages),
    and the reason is required. An unmarked bash block with other commands than ``skicm``
    fails the test, so nothing is skipped silently.
  - ``<!-- docs-test: both routing modes -->``: the block's code is meant to work whether
    metadata routing is off or on (``import skada`` turns it on for the whole process); it
    runs twice, routing off and then on.

- A python block with a ``GridSearchCV`` search must either carry the ``both routing modes``
  marker or sit on a page that also shows the routing-on form (a search block that calls
  ``set_config(enable_metadata_routing=True)``): users meet both modes.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sklearn

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGE_IDS = [str(page.relative_to(ROOT)) for page in PAGES]

MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<marker>.*?)\s*-->")
SKIP = re.compile(r"skip\s*\((?P<reason>[^)]*)\)")
BOTH_MODES = "both routing modes"
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    flags=re.DOTALL | re.MULTILINE,
)
PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell", "console"}
# Subprocesses import this checkout's skicm, and whatever else the test process can import.
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path[1:]])}


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marker: str | None

    @property
    def skip_reason(self):
        skip = SKIP.fullmatch(self.marker or "")
        return skip["reason"].strip() if skip else None

    def __str__(self):
        return f"{self.page.relative_to(ROOT)}:{self.line} ({self.language})"


def code_blocks(page):
    """The fenced blocks of a Markdown page (dedented, for fences inside lists), with the
    marker of each."""
    text = page.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        language = match["info"].strip().split(" ")[0].lower()
        code = textwrap.dedent(match["body"])
        blocks.append(Block(page, line, language, code, marker and marker["marker"]))
    return blocks


def skicm_commands(block):
    """The ``skicm`` commands of a shell block as argument lists, or None if it has others."""
    joined = re.sub(r"\\\n", " ", block.code)
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line.removeprefix("$ "), comments=True)
        if not words:
            continue
        if words[0] != "skicm":
            return None
        commands.append(words[1:])
    return commands


@functools.cache
def run_page(page):
    """Run the page's blocks.

    Returns the namespace of its python blocks, the outputs of its commands, and for each
    ``both routing modes`` block, a copy of the namespace after its routing-off run.
    """
    from skicm.evaluation import _methods

    namespace = {"__name__": "__docs__"}
    outputs, routing_off = [], []
    registry = dict(_methods._REGISTRY)  # a page may register methods: the registry is restored
    previous = os.getcwd()
    workdir = tempfile.TemporaryDirectory(prefix="skicm-docs-", ignore_cleanup_errors=True)
    os.chdir(workdir.name)
    try:
        with sklearn.config_context():  # a block may enable metadata routing: restore after
            for block in code_blocks(page):
                if block.skip_reason is not None:
                    continue
                if block.language in PYTHON:
                    code = compile(block.code, f"{block}", "exec")
                    modes = [None]
                    if block.marker == BOTH_MODES:
                        modes = [False, True]
                    for routing in modes:
                        if routing is not None:
                            sklearn.set_config(enable_metadata_routing=routing)
                        try:
                            exec(code, namespace)
                        except Exception as error:
                            mode = "" if routing is None else f" with routing {routing}"
                            raise AssertionError(f"{block} raised{mode} {error!r}") from error
                        if routing is False:
                            routing_off.append(dict(namespace))
                elif block.language in SHELL:
                    for arguments in skicm_commands(block) or []:
                        done = subprocess.run(
                            [sys.executable, "-m", "skicm", *arguments],
                            capture_output=True,
                            text=True,
                            timeout=300,
                            env=_ENV,
                        )
                        assert done.returncode == 0, (
                            f"{block}: `skicm {shlex.join(arguments)}` exited with "
                            f"{done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
                        )
                        outputs.append(done.stdout)
    finally:
        os.chdir(previous)
        workdir.cleanup()
        _methods._REGISTRY.clear()
        _methods._REGISTRY.update(registry)
    return namespace, outputs, routing_off


# ------------------------------------------------------------------------ every page, every block
@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_code_block_runs_as_written(page):
    run_page(page)
    assert not sklearn.get_config()["enable_metadata_routing"], "the page's config is restored"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_block_is_runnable_or_marked_with_a_reason(page):
    for block in code_blocks(page):
        if block.skip_reason is not None:
            assert len(block.skip_reason) >= 10, f"{block}: say why it cannot run here"
            continue
        assert block.marker in (None, BOTH_MODES), f"{block}: unknown marker {block.marker!r}"
        if block.language in SHELL:
            assert skicm_commands(block) is not None, (
                f"{block} has commands other than `skicm ...`: mark it "
                "<!-- docs-test: skip (reason) --> or make it a skicm command"
            )


def searches_shown_in_one_routing_mode(page):
    """Python blocks with a GridSearchCV that neither run in both modes nor have a routing-on
    form on their page."""
    blocks = [block for block in code_blocks(page) if block.language in PYTHON]
    routed = any(
        "GridSearchCV(" in block.code and "enable_metadata_routing=True" in block.code
        for block in blocks
    )
    return [
        block
        for block in blocks
        if "GridSearchCV(" in block.code
        and block.skip_reason is None
        and block.marker != BOTH_MODES
        and not routed
    ]


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_grid_search_is_shown_for_both_routing_modes(page):
    assert searches_shown_in_one_routing_mode(page) == [], (
        "show the routing-on form of these searches beside them, or mark them "
        f"<!-- docs-test: {BOTH_MODES} --> if the same code works in both modes"
    )


def test_the_block_parser_and_markers(tmp_path):
    """The runner finds fences, markers and skicm commands the way the module docstring says."""
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n```python\nx = 1\n```\n\n"
        "<!-- docs-test: skip (needs the internet) -->\n```python\nraise RuntimeError\n```\n\n"
        "```bash\nskicm demo --fast  # comment\nskicm evaluate DIR \\\n    --alpha 2\n```\n\n"
        "```bash\npip install skicm\n```\n\n```\nplain output\n```\n"
        "<!-- docs-test: both routing modes -->\n```python\nimport sklearn\n```\n"
    )
    blocks = code_blocks(page)
    assert [(block.language, block.line) for block in blocks] == [
        ("python", 3),
        ("python", 8),
        ("bash", 12),
        ("bash", 18),
        ("", 22),
        ("python", 26),
    ]
    reasons = [block.skip_reason for block in blocks]
    assert reasons == [None, "needs the internet", None, None, None, None]
    assert blocks[-1].marker == BOTH_MODES
    assert skicm_commands(blocks[2]) == [["demo", "--fast"], ["evaluate", "DIR", "--alpha", "2"]]
    assert skicm_commands(blocks[3]) is None

    page.write_text("- a list item:\n\n  ```python\n  y = 2\n  ```\n")
    (indented,) = code_blocks(page)
    assert (indented.language, indented.code) == ("python", "y = 2\n")

    search = "```python\nGridSearchCV(pipe, grid).fit(X, y, step__X_intervened=X2)\n```\n"
    routed = "```python\nset_config(enable_metadata_routing=True)\nGridSearchCV(pipe, grid)\n```\n"
    page.write_text(search)
    assert len(searches_shown_in_one_routing_mode(page)) == 1
    page.write_text(search + routed)
    assert searches_shown_in_one_routing_mode(page) == []
    page.write_text(f"<!-- docs-test: {BOTH_MODES} -->\n" + search)
    assert searches_shown_in_one_routing_mode(page) == []


# ------------------------------------------------------------------ what the blocks claim, by value
def test_readme_quick_example_selects_the_invariant_rank_in_both_routing_modes():
    namespace, *_ = run_page(ROOT / "README.md")
    # Routing off: step parameters the classic way; routing on: requested and plain-named.
    assert namespace["search"].best_params_ == {"invariantprojector__n_components": 4}
    assert namespace["routed_search"].best_params_ == {"invariantprojector__n_components": 4}
    requests = namespace["routed_search"].best_estimator_[0].get_metadata_routing().fit.requests
    assert requests["X_intervened"] is True and requests["groups"] is False
    # The image example: text interventions from the two class names (28 prompt pairs each).
    projector = namespace["pipe"].named_steps["icm"]
    assert projector.n_differences_seen_ == 2 * 28
    assert projector.components_.shape == (8, 32)


def test_readme_routing_on_form_works_after_importing_skada():
    """skada switches metadata routing on for the whole process when imported: then the
    README's classic form raises and its routing-on form works (run in a fresh process, so
    this one keeps the default configuration)."""
    codes = [block.code for block in code_blocks(ROOT / "README.md") if block.language in PYTHON]
    classic, routed = codes[0], next(code for code in codes if "routed_search" in code)
    script = f"""
import skada, sklearn
assert sklearn.get_config()["enable_metadata_routing"]
namespace = {{}}
try:
    exec({classic!r}, namespace)
except Exception as error:
    print("classic form:", type(error).__name__, error)
else:
    raise SystemExit("the classic form ran under metadata routing")
with sklearn.config_context(enable_metadata_routing=False):
    exec({classic!r}, namespace)
exec({routed!r}, namespace)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=_ENV,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "classic form:" in done.stdout and "invariantprojector__X_intervened" in done.stdout
    assert done.stdout.count("{'invariantprojector__n_components': 4}") == 2


def test_projector_guide_example_builds_a_routed_pipeline():
    namespace, *_ = run_page(ROOT / "docs" / "projector.md")
    assert namespace["pipe"].transform_input == ["X_intervened"]


def test_interventions_guide_compositions():
    namespace, *_ = run_page(ROOT / "docs" / "interventions.md")
    n = len(namespace["images"])
    # Each counterpart names the transform that made it, one of the paper's seven.
    from skicm.interventions import PAPER_IMAGE_INTERVENTIONS

    assert len(namespace["made_by"]) == n
    assert set(namespace["made_by"]) <= set(PAPER_IMAGE_INTERVENTIONS)
    # The routing-off and routing-on forms of the counterpart pipeline fit the same projector.
    classic = namespace["classic"].named_steps["icm"]
    routed = namespace["routed"].named_steps["icm"]
    assert classic.n_differences_seen_ == routed.n_differences_seen_ == n
    np.testing.assert_allclose(classic.components_, routed.components_, atol=1e-6)
    # The grid search in both routing modes: the same candidates, the same scores.
    search, classic_search = namespace["search"], namespace["classic_search"]
    assert search.n_splits_ == classic_search.n_splits_ == 3
    assert search.best_params_ == classic_search.best_params_
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"],
        classic_search.cv_results_["mean_test_score"],
        atol=1e-12,
    )


def test_zero_shot_guide_selects_a_rank_alike_in_both_routing_modes():
    namespace, _, (routing_off,) = run_page(ROOT / "docs" / "zero_shot.md")
    search, off = namespace["search"], routing_off["search"]
    scores = search.cv_results_["mean_test_score"]
    ranks = search.cv_results_["param_zeroshot__projector__n_components"]
    assert search.best_params_ == {"zeroshot__projector__n_components": ranks[scores.argmax()]}
    assert off is not search
    np.testing.assert_array_equal(off.cv_results_["mean_test_score"], scores)


def test_demo_page_command_prints_the_table():
    _, outputs, _ = run_page(ROOT / "docs" / "demo.md")
    assert outputs and all("CLIP-ICM projector" in output for output in outputs)


@pytest.mark.parametrize("command_line", ["skicm demo", "pytest"])
def test_readme_has_the_two_fresh_machine_commands(command_line):
    text = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    assert len(commands) == 2
    assert any(command_line in command for command in commands)
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1].strip() in ci
