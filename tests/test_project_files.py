"""The project's declarations agree with each other: MLproject, conda.yaml, requirements, CLIs."""

from __future__ import annotations

import re
import subprocess
import sys

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
    @options.click_option(declaration)
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
        assert param["type"] == declaration.type.mlproject_type
        if param["type"] == "int":
            assert isinstance(option.type.convert("3", option, None), int)
        elif param["type"] == "float":
            assert isinstance(option.type.convert("0.5", option, None), float)
        assert options.as_param(param["default"]) == options.as_param(option.default)


def test_mlproject_and_the_parameter_tables_are_as_generated():
    """MLproject, docs/parameters.md and the README's algorithm table are what
    `python -m steps.project_files` writes from the declarations: they cannot drift."""
    result = subprocess.run([sys.executable, "-m", "steps.project_files", "--check"],
                            cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_docs_have_a_parameter_table_row_for_every_parameter():
    """docs/parameters.md (the README links to it) has a row for every parameter."""
    readme = (PROJECT_DIR / "docs" / "parameters.md").read_text()
    own = {**ENTRY_POINT_OPTIONS, "main": options.DRIVER + options.QUERY}
    for entry_point, declared in own.items():
        heading = f"### `{entry_point}`"
        assert heading in readme, heading
        table = readme.split(heading, 1)[1].split("\n#", 1)[0]
        for declaration in declared:
            assert f"| `{declaration.name}` |" in table, (entry_point, declaration.name)


# --- README and docs: short, quick start first, every relative link resolving ----------------

README_MAX_LINES = 250
QUICK_START_WITHIN = 40
MARKDOWN_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def markdown_pages():
    return [PROJECT_DIR / "README.md", *sorted((PROJECT_DIR / "docs").glob("*.md")),
            PROJECT_DIR / "benchmarks" / "README.md"]


def outside_code(text: str) -> list[str]:
    """The page's lines outside fenced code blocks, inline code blanked."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        lines.append("" if fenced else re.sub(r"`[^`]*`", "``", line))
    return lines


def anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated one numbered."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"#{1,6} +(.*?) *#*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_readme_is_short_with_the_quick_start_first():
    lines = (PROJECT_DIR / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, len(lines)
    (number,) = [i + 1 for i, line in enumerate(lines) if line.strip() == "## Quick start"]
    assert number <= QUICK_START_WITHIN, number


def test_readme_and_docs_links_resolve():
    """Every relative link in README.md, docs/*.md and benchmarks/README.md names a file that
    exists and, with an anchor, a heading of that file."""
    checked = 0
    for page in markdown_pages():
        for line in outside_code(page.read_text()):
            for target in MARKDOWN_LINK.findall(line):
                if re.match(r"[a-z][a-z0-9+.-]*:", target):
                    continue  # http(s), mailto: not checked here
                path, _, anchor = target.partition("#")
                linked = (page.parent / path).resolve() if path else page
                assert linked.exists(), f"{page.name}: {target}"
                if anchor:
                    assert linked.suffix == ".md", f"{page.name}: {target}"
                    assert anchor in anchors(linked.read_text()), f"{page.name}: {target}"
                checked += 1
    assert checked > 0
