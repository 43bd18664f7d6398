"""The project's declarations agree with each other: MLproject, conda.yaml, requirements, CLIs."""

from __future__ import annotations

import re

import click
import pytest
import yaml

from steps import options
from tests.conftest import PROJECT_DIR

#: Each entry point's parameter declarations, as the CLIs build their options from them.
ENTRY_POINT_OPTIONS = options.ENTRY_POINTS


def load_yaml(name):
    return yaml.safe_load((PROJECT_DIR / name).read_text())


def pins(lines):
    return sorted(line.strip() for line in lines
                  if line.strip() and not line.strip().startswith(("#", "-r")))


def click_option(declaration) -> click.Option:
    @declaration
    def command(**_):
        pass

    return command.__click_params__[0]


def test_requirements_equal_conda_pip_section():
    conda = load_yaml("conda.yaml")
    (pip_section,) = [d["pip"] for d in conda["dependencies"] if isinstance(d, dict)]
    requirements = pins((PROJECT_DIR / "requirements.txt").read_text().splitlines())
    assert pins(pip_section) == requirements
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9.]*", p) for p in requirements)
    names = {p.split("==")[0].lower() for p in requirements}
    assert {"mlflow", "scikit-learn", "xaitk-saliency", "smqtk-classifier", "numpy", "click",
            "typing_extensions"} <= names
    assert "python=3.11" in conda["dependencies"]


def test_mlproject_uses_conda_env_and_declares_the_entry_points():
    project = load_yaml("MLproject")
    assert project["conda_env"] == "conda.yaml"
    assert set(project["entry_points"]) == set(ENTRY_POINT_OPTIONS)


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINT_OPTIONS))
def test_mlproject_parameters_match_the_cli_options(entry_point):
    """Same names, types and defaults in MLproject as in the click CLI, every one passed on."""
    spec = load_yaml("MLproject")["entry_points"][entry_point]
    declared = ENTRY_POINT_OPTIONS[entry_point]
    assert list(spec["parameters"]) == [d.name for d in declared]
    for declaration in declared:
        option = click_option(declaration)
        param = spec["parameters"][declaration.name]
        assert f"--{declaration.name} {{{declaration.name}}}" in spec["command"]
        if option.required:
            assert "default" not in param
            continue
        if isinstance(option.type, click.IntRange):
            assert param["type"] == "int"
        elif isinstance(option.type, click.FloatRange):
            assert param["type"] == "float"
        else:
            assert param["type"] == "string"
        assert options.as_param(param["default"]) == options.as_param(option.default)


def test_readme_has_a_parameter_table_row_for_every_parameter():
    readme = (PROJECT_DIR / "README.md").read_text()
    own = {**ENTRY_POINT_OPTIONS, "main": options.DRIVER + options.QUERY}
    for entry_point, declared in own.items():
        heading = f"### `{entry_point}`"
        assert heading in readme, heading
        table = readme.split(heading, 1)[1].split("\n#", 1)[0]
        for declaration in declared:
            assert f"| `{declaration.name}` |" in table, (entry_point, declaration.name)
