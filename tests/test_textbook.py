"""The book as a reader meets it: every link resolves, every chapter follows the chapter template
and has its solutions, and nothing cites the private design note instead of docs/design.md."""
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from mmsa import book
from mmsa.book import params

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CHAPTERS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
NUMBERS = {p.name[:2] for p in CHAPTERS}

# Chapters whose template cells are still being written on another branch (ch0506): strict, so the
# mark fails, and must be removed, as soon as the template is there.
TEMPLATE_PENDING: set = set()
# Files that still cite the design note by its private name, owned by other branches right now;
# the lead removes each entry when its branch lands.
SPEC_PENDING: set = set()

LINK = re.compile(r"\[[^\]]*\]\(([^()\s]+)\)")
CHAPTER_REF = re.compile(r"\b(?:[Nn]otebooks?|[Cc]hapters?)((?:\s*(?:,|–|-|and|or|&)?\s*\[?\d\d\b)+)")


def markdown_sources():
    """(file, text) for README.md, docs/*.md and every markdown cell of every notebook under notebooks/."""
    out = [(ROOT / "README.md", (ROOT / "README.md").read_text())]
    out += [(p, p.read_text()) for p in sorted((ROOT / "docs").glob("*.md"))]
    for path in sorted(NOTEBOOKS.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        nb = nbformat.read(path, as_version=4)
        out += [(path, c.source) for c in nb.cells if c.cell_type == "markdown"]
    return out


def without_code(text: str) -> str:
    return re.sub(r"```.*?```|`[^`]*`", "", text, flags=re.S)


def test_every_markdown_link_resolves():
    broken = []
    for path, text in markdown_sources():
        for target in LINK.findall(without_code(text)):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # web addresses, mailto:, anchors
            if not (path.parent / target.split("#")[0]).exists():
                broken.append(f"{path.relative_to(ROOT)}: ({target})")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_no_reference_to_a_chapter_that_does_not_exist():
    bad = []
    for path, text in markdown_sources():
        for span in CHAPTER_REF.findall(without_code(text)):
            bad += [f"{path.relative_to(ROOT)}: chapter {nn}" for nn in re.findall(r"\d\d", span) if nn not in NUMBERS]
    assert not bad, "\n".join(bad)


def test_link_checker_catches_a_missing_file_and_chapter():
    text = "See [the notes](../docs/nowhere.md) and notebook 42."
    assert LINK.findall(text) == ["../docs/nowhere.md"] and not (NOTEBOOKS / "../docs/nowhere.md").exists()
    assert [re.findall(r"\d\d", s) for s in CHAPTER_REF.findall(text)] == [["42"]]


def _template_problems(path: Path) -> list[str]:
    nn = path.name[:2]
    nb = nbformat.read(path, as_version=4)
    md = [c.source for c in nb.cells if c.cell_type == "markdown"]
    problems = []
    if not md or not md[0].startswith(f"# {nn} · "):
        problems.append(f"the first cell is not the title '# {nn} · …'")
    header = next((s for s in md[:3] if "**You will learn**" in s), "")
    for row in ("**You will learn**", "**Prerequisites**", "**Run time**", "**Paper**"):
        if row not in header:
            problems.append(f"header table without {row}")
    if not any(re.match(r"## 1\b", s) for s in md):
        problems.append("no numbered sections ('## 1 …')")
    checks = [s for s in md if s.startswith("**Check your understanding.**")]
    if not checks:
        problems.append("no 'Check your understanding' cell")
    for s in checks:
        if not 1 <= len(re.findall(r"^\d\. ", s, flags=re.M)) <= 3:
            problems.append(f"a check cell without 1-3 numbered questions: {s[:60]!r}")
    heads = [s.split("\n")[0] for s in md]
    try:
        order = [heads.index(h) for h in ("## Summary", "## Exercises", "## Further reading")]
    except ValueError:
        return problems + ["the end is not '## Summary', '## Exercises', '## Further reading'"]
    if order != sorted(order) or order[-1] != len(md) - 1:
        problems.append("Summary, Exercises and Further reading are not the last three parts, in that order")
    if order[0] == 0 or not md[order[0] - 1].startswith("## What we found"):
        problems.append("'## What we found' does not come right before '## Summary'")
    exercises = md[order[1]]
    items = re.findall(r"^\d\. \*\*\[(★{1,3})\]\*\*", exercises, flags=re.M)
    if not 4 <= len(items) <= 6:
        problems.append(f"{len(items)} graded exercises (4-6 expected)")
    if f"(solutions/{nn}_solutions.ipynb)" not in exercises:
        problems.append(f"the exercises do not link solutions/{nn}_solutions.ipynb")
    return problems


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.xfail(
    strict=True, reason="template cells pending on branch ch0506")) if p.name[:2] in TEMPLATE_PENDING else p
    for p in CHAPTERS], ids=[p.stem for p in CHAPTERS])
def test_every_chapter_follows_the_template(path):
    problems = _template_problems(path)
    assert not problems, f"{path.name}: " + "; ".join(problems)


def test_template_check_reports_what_is_missing(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 07 · A title"), nbformat.v4.new_markdown_cell("## 1 · Start"),
                nbformat.v4.new_markdown_cell("## Summary\n\nx"),
                nbformat.v4.new_markdown_cell("## Exercises\n\n1. **[★]** a\n2. **[★★]** b"),
                nbformat.v4.new_markdown_cell("## Further reading\n\n* y")]
    path = tmp_path / "07_x.ipynb"
    nbformat.write(nb, path)
    problems = "; ".join(_template_problems(path))
    for what in ("**You will learn**", "**Paper**", "no 'Check your understanding' cell", "2 graded exercises",
                 "solutions/07_solutions.ipynb"):
        assert what in problems, what


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_chapter_has_solutions_that_run_in_ci_mode(path):
    nn = path.name[:2]
    sol = NOTEBOOKS / "solutions" / f"{nn}_solutions.ipynb"
    assert sol.exists(), f"{sol.relative_to(ROOT)} missing"
    assert params.solutions([nn]) == [sol]  # `python -m mmsa.book test --only NN` runs it
    nb = nbformat.read(sol, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{sol.name}: {len(tagged)} cells tagged 'parameters'"
    # committed executed (a reader sees every answer), without errors, saying which parameters made the outputs
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("outputs") for c in code if c.source.strip() and c not in tagged), f"{sol.name}: a code cell without output"
    assert not [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"], f"{sol.name}: an error output"
    assert f"ci/solutions/{nn}.yaml" in nb.cells[0].source and "classroom preset" in nb.cells[0].source
    assert nb.cells[0].source.startswith(f"# {nn} · Solutions") and f"](../{path.name})" in nb.cells[0].source
    chapter = nbformat.read(path, as_version=4)
    exercises = next((c.source for c in chapter.cells if c.cell_type == "markdown" and c.source.startswith("## Exercises")), "")
    levels = re.findall(r"^\d\. \*\*\[(★{1,3})\]\*\*", exercises, flags=re.M)
    answered = [re.match(r"## Exercise (\d+) \[(★{1,3})\]", c.source) for c in nb.cells if c.cell_type == "markdown"]
    answered = [(int(m.group(1)), m.group(2)) for m in answered if m]
    if levels:  # one solution per exercise of the chapter, same number and level
        assert answered == list(enumerate(levels, 1)), f"{sol.name} answers {answered}, the chapter asks {levels}"
    ci = ROOT / "ci" / "solutions" / f"{nn}.yaml"
    assert ci.exists(), f"{ci.relative_to(ROOT)} missing: the solutions would run with the main job's parameters in CI"
    values = yaml.safe_load(ci.read_text()) or {}
    assert params.check_parameters(sol, values, str(ci)) is not None  # names and types match the parameters cell


def test_index_lists_every_chapter_and_its_solutions():
    nb = nbformat.read(NOTEBOOKS / "index.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    for path in CHAPTERS:
        assert f"]({path.name})" in text, path.name
        assert f"](solutions/{path.name[:2]}_solutions.ipynb)" in text, path.name


def test_nothing_cites_the_private_design_note():
    name, seed = "SP" + "EC", "seed" + " text"  # not spelled out, so this file does not match itself
    pattern = re.compile(rf"\b{name}\b|{seed}")
    files = [p for d in ("mmsa", "tests", "benchmarks", "ci", "docs", "data/paper_results") for p in (ROOT / d).rglob("*")
             if p.suffix in (".py", ".md", ".yaml", ".csv")]
    files += [ROOT / "README.md"] + [p for p in NOTEBOOKS.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts]
    hits = []
    for p in files:
        rel = p.relative_to(ROOT).as_posix()
        if rel in SPEC_PENDING:
            continue
        for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{rel}:{i}: {line.strip()[:100]}")
    assert not hits, "cite docs/design.md §N instead:\n" + "\n".join(hits)
    for rel in SPEC_PENDING:  # an entry whose file no longer cites it must leave the list
        assert pattern.search((ROOT / rel).read_text()), f"{rel} is clean now: remove it from SPEC_PENDING"


def test_index_lists_what_has_run(tmp_path, monkeypatch, capsys):
    """The index's one parameters cell and its code: chapters with and without key numbers."""
    nb = nbformat.read(NOTEBOOKS / "index.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    (tmp_path / "02.json").write_text('{"dataset": "mosi", "n_train": 24}')
    monkeypatch.chdir(ROOT)
    scope = {}
    for c in code:
        exec(c.source.replace('"build/metrics"', repr(str(tmp_path))), scope)
    table = scope["table"].set_index("chapter")
    assert table["run here"].sum() == 1 and table.loc["02_emt_dlfr", "training clips"] == 24
    assert f"1 of {len(CHAPTERS)} chapters" in capsys.readouterr().out
