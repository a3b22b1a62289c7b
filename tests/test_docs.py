"""The README's and the projector guide's Python examples run and say what they claim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sklearn

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


def run_blocks(path):
    namespace = {}
    with sklearn.config_context():  # a block may enable metadata routing: restore after
        for block in python_blocks(path):
            exec(compile(block, str(path), "exec"), namespace)
    return namespace


def test_readme_quick_example_selects_the_invariant_rank(capsys):
    namespace = run_blocks(ROOT / "README.md")
    assert namespace["search"].best_params_ == {"invariantprojector__n_components": 4}
    assert "{'invariantprojector__n_components': 4}" in capsys.readouterr().out
    # The image example: text interventions from the two class names (28 prompt pairs each).
    projector = namespace["pipe"].named_steps["icm"]
    assert projector.n_differences_seen_ == 2 * 28
    assert projector.components_.shape == (8, 32)


def test_projector_guide_example_builds_a_routed_pipeline():
    namespace = run_blocks(ROOT / "docs" / "projector.md")
    pipe = namespace["pipe"]
    assert pipe.transform_input == ["X_intervened"]
    assert not sklearn.get_config()["enable_metadata_routing"]


@pytest.mark.parametrize("command_line", ["skicm demo", "pytest"])
def test_readme_has_the_two_fresh_machine_commands(command_line):
    text = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    assert len(commands) == 2
    assert any(command_line in command for command in commands)
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1].strip() in ci
