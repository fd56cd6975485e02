"""Repository-level checks: layout, README commands, environment.yml == pyproject pins."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_top_level_layout():
    for name in ["README.md", "environment.yml", "pyproject.toml", "notebooks", "mmsa", "data", "figures", "tests", ".ci/run"]:
        assert (ROOT / name).exists(), f"missing {name}"


def _pyproject_deps():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(meta["dependencies"]) | set(meta["optional-dependencies"]["dev"])


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(pip) == _pyproject_deps(), (
        f"only in environment.yml: {set(pip) - _pyproject_deps()}; "
        f"only in pyproject.toml: {_pyproject_deps() - set(pip)}"
    )


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    commands = [line.strip() for b in blocks for line in b.splitlines() if line.strip() and not line.startswith("#")]
    assert "python -m mmsa.book test" in commands
    assert "python -m mmsa.book test" in ci
    install = next(c for c in commands if c.startswith("pip install torch"))
    assert install.replace("pip install", "pip install -q") in ci or install in ci


def test_every_notebook_has_one_parameters_cell():
    import nbformat

    nbs = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert nbs, "no notebooks"
    for path in nbs:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
