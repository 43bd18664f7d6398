"""MLproject's entry points and the docs' parameter tables, generated from the declarations.

Every parameter is declared once (`steps/options.py`, beside the piece that uses it); this
writes what repeats them: MLproject's parameter and command blocks, the tables of
`docs/parameters.md` and the README's algorithm table. A new algorithm with a new parameter is
one file plus `python -m steps.project_files`; `--check` changes nothing and exits 1 naming
the files that are out of date (tests/test_project_files.py runs it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from steps import options
from steps.core.algorithm import ALGORITHMS
from steps.core.parameters import Parameter, as_param

PROJECT_DIR = Path(__file__).resolve().parent.parent
HEADER = "name: saliency-flow\n\nconda_env: conda.yaml\n\nentry_points:\n"
#: How each entry point is started; the others are `python -m steps.<name>`.
COMMANDS = {"main": "python main.py"}
#: The parameters each entry point's table in docs/parameters.md lists (`main` lists its own;
#: its section says it passes on every step's).
DOCUMENTED = {**options.ENTRY_POINTS, "main": options.DRIVER + options.QUERY}


def mlproject() -> str:
    """The whole MLproject file."""
    lines = [HEADER.rstrip("\n")]
    for entry_point, declarations in options.ENTRY_POINTS.items():
        lines += [f"  {entry_point}:", "    parameters:"]
        lines += [f"      {d.name}: {mlproject_parameter(d)}" for d in declarations]
        lines += ["    command: >-",
                  f"      {COMMANDS.get(entry_point, f'python -m steps.{entry_point}')}"]
        lines += [f"      --{d.name} {{{d.name}}}" for d in declarations]
    return "\n".join(lines) + "\n"


def mlproject_parameter(declaration: Parameter) -> str:
    kind = declaration.type.mlproject_type
    if declaration.required:
        return f"{{type: {kind}}}"
    default = as_param(declaration.default)
    written = default if kind != "string" else json.dumps(default)
    return f"{{type: {kind}, default: {written}}}"


def parameter_table(declarations: list[Parameter]) -> str:
    rows = ["| parameter | type | default | accepts / meaning |", "|---|---|---|---|"]
    for d in declarations:
        default = as_param(d.default)
        accepts = d.type.accepts()
        meaning = f"{accepts}. {d.help}" if accepts else d.help
        rows.append(f"| `{d.name}` | {d.type.mlproject_type} | "
                    f"{f'`{default}`' if default else '(empty)'} | {markdown_cell(meaning)} |")
    return "\n".join(rows)


def algorithm_table() -> str:
    default = options.ALGORITHM.default
    rows = ["| `algorithm` | xaitk perturber + scorer | its parameters |", "|---|---|---|"]
    for name in sorted(ALGORITHMS.names(), key=lambda name: (name != default, name)):
        algorithm = ALGORITHMS.get(name)
        own = ", ".join(f"`{p.name}`" for p in algorithm.parameters)
        rows.append(f"| `{name}`{' (default)' if name == default else ''} | "
                    f"{markdown_cell(algorithm.xaitk)} | {own} |")
    return "\n".join(rows)


def markdown_cell(text: str) -> str:
    """Text that stays in its table cell and shows as written."""
    return re.sub(r"<(?=[A-Za-z/])", "&lt;", text.replace("|", "\\|"))  # not an HTML tag


def between_markers(text: str, marker: str, content: str) -> str:
    """`text` with what lies between `<!-- marker -->` and `<!-- /marker -->` replaced."""
    pattern = re.compile(rf"(<!-- {re.escape(marker)} -->\n).*?(\n<!-- /{re.escape(marker)} -->)",
                         re.S)
    if not pattern.search(text):
        raise click.ClickException(f"no <!-- {marker} --> ... <!-- /{marker} --> block")
    return pattern.sub(lambda match: match[1] + content + match[2], text)


def generated() -> dict[Path, str]:
    """Each generated file's path and its content as the declarations say."""
    parameters_page = PROJECT_DIR / "docs" / "parameters.md"
    page = parameters_page.read_text()
    for entry_point, declarations in DOCUMENTED.items():
        page = between_markers(page, f"parameters {entry_point}", parameter_table(declarations))
    readme = PROJECT_DIR / "README.md"
    return {PROJECT_DIR / "MLproject": mlproject(),
            parameters_page: page,
            readme: between_markers(readme.read_text(), "algorithms", algorithm_table())}


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--check", is_flag=True, help="Change nothing; exit 1 if a file is out of date.")
def main(check: bool) -> None:
    files = generated()
    stale = [path for path, content in files.items() if path.read_text() != content]
    if check:
        if stale:
            names = ", ".join(str(path.relative_to(PROJECT_DIR)) for path in stale)
            raise click.ClickException(f"{names} out of date: run python -m steps.project_files")
        return
    for path in stale:
        path.write_text(files[path])
        click.echo(f"Wrote {path.relative_to(PROJECT_DIR)}")


if __name__ == "__main__":
    main()
