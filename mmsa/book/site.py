"""The book as a static website, built offline with Jupyter Book (``python -m mmsa.book site``).

    python -m mmsa.book site                      # build/site/_build/html/index.html
    python -m mmsa.book site --from build/classroom/notebooks
    python -m mmsa.book site --only 09            # the landing page, chapter 09 and the reference pages

The site shows the notebooks as they were executed; it never runs them.  For each notebook it takes
the executed copy under ``--from`` (default ``build/notebooks/``, where ``python -m mmsa.book run``
puts them) when there is one, else the committed notebook of ``notebooks/``.  Pages, in order:
the table of contents (``notebooks/index.ipynb``) as the landing page, the chapters 00-10, the
reproduction report (``build/report.md`` that chapter 10 writes, or a page saying how to make it),
the instructor's guide (``docs/course.md``), the design notes (``docs/design.md``), and, separately,
the solutions.  Links between these files are rewritten for the site's flat layout.

Equations are typeset by MathJax 2.7 from the ``jupyter-server-mathjax`` package (a dependency of
the ``dev`` extra), copied into the site: no page loads anything from the network.

Work happens in ``build/site/src`` (a staging copy, so Jupyter Book's caches never land in
``notebooks/``); the HTML goes to ``build/site/_build/html``.  Files are copied only when they changed,
so a rebuild after one notebook changed takes seconds.
"""
from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

TITLE = "Multimodal sentiment analysis: a reproducible textbook"
# MathJax 2 skips the notebook pages (myst-nb marks them tex2jax_ignore) except the elements
# Sphinx and myst-nb mark as math, as MathJax 3's processHtmlClass does with Jupyter Book's defaults
MATHJAX2_CONFIG = {
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                "processRefs": False, "processEnvironments": True,
                "processClass": "tex2jax_process|mathjax_process|math|output_area",
                "ignoreClass": "tex2jax_ignore|mathjax_ignore"},
    "showMathMenu": False, "messageStyle": "none",
}


def mathjax_dir() -> Path | None:
    """The static MathJax 2.7 of ``jupyter-server-mathjax`` (``None`` when it is not installed)."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        return None
    path = Path(jupyter_server_mathjax.__file__).parent / "static"
    return path if (path / "MathJax.js").exists() else None


def _sync(src: Path, dst: Path) -> bool:
    """Copy ``src`` to ``dst`` unless identical (keeps mtimes, so Sphinx rebuilds only what changed)."""
    if dst.exists() and filecmp.cmp(src, dst, shallow=False):
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    return True


def _write(text: str, dst: Path) -> bool:
    if dst.exists() and dst.read_text(encoding="utf-8") == text:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text, encoding="utf-8")
    return True


# links written for the repository's layout, as they read from the site's flat layout
LINKS = {"": [("](../docs/design.md", "](design.md"), ("](../docs/course.md", "](course.md")],
         "course.md": [("](../notebooks/solutions/", "](solutions/"), ("](../notebooks/", "](")],
         "design.md": [("](../notebooks/solutions/", "](solutions/"), ("](../notebooks/", "](")]}


def _relink(text: str, rel: str) -> str:
    for old, new in LINKS.get(rel, LINKS[""] if rel.endswith(".ipynb") and "/" not in rel else []):
        text = text.replace(old, new)
    return text


def _pick(committed: Path, executed_dir: Path | None) -> tuple[Path, str]:
    """The executed copy of a notebook when there is one, else the committed notebook."""
    from mmsa.book import paths
    from mmsa.book import params

    if executed_dir is not None:
        rel = Path(params.SOLUTIONS, committed.name) if params.is_solution(committed) else Path(committed.name)
        if (executed_dir / rel).exists():
            return executed_dir / rel, paths.display_path(executed_dir / rel)
    return committed, paths.display_path(committed) + " (committed)"


def _title(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return nb_path.stem


def _yaml(data) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)


REPORT_MISSING = """# Reproduction report

The reproduction report is written by chapter 10 (`10_efficiency_and_report`) from the key numbers
of chapters 00-09: run the book (`python -m mmsa.book run`), which writes `build/report.md`, then
rebuild this site (`python -m mmsa.book site`).
"""


def stage(src: Path, only=None, executed_dir: Path | None = None) -> list[tuple[str, str]]:
    """Fill the staging folder ``src`` (notebooks, pages, ``_config.yml``, ``_toc.yml``, MathJax).

    Returns ``[(page, where it came from)]``.
    """
    from mmsa.book import paths
    from mmsa.book import params

    root = paths.repo_root()
    chapters = params.notebooks(only)
    sols = params.solutions(only)
    wanted, used = set(), []

    def put(source: Path, rel: str, origin: str):
        text = source.read_text(encoding="utf-8")
        linked = _relink(text, rel)
        if linked == text:
            _sync(source, src / rel)
        else:
            _write(linked, src / rel)
        wanted.add(rel)
        used.append((rel, origin))

    index = root / "notebooks" / "index.ipynb"
    put(*_pick_as(index, executed_dir, "index.ipynb"))
    for nb in chapters:
        put(*_pick_as(nb, executed_dir, nb.name))
    for nb in sols:
        put(*_pick_as(nb, executed_dir, f"{params.SOLUTIONS}/{nb.name}"))
    report = (executed_dir.parent / "report.md") if executed_dir is not None else root / "build" / "report.md"
    if report.exists():
        put(report, "report.md", paths.display_path(report))
    else:
        _write(REPORT_MISSING, src / "report.md")
        wanted.add("report.md")
        used.append(("report.md", "placeholder (no build/report.md yet)"))
    course, design = root / "docs" / "course.md", root / "docs" / "design.md"
    for page in (course, design):
        if page.exists():
            put(page, page.name, paths.display_path(page))

    toc = {"format": "jb-book", "root": "index", "parts": [
        {"caption": "Chapters", "chapters": [{"file": Path(nb.name).stem} for nb in chapters]},
        {"caption": "Results and teaching", "chapters": [{"file": "report"}]
         + [{"file": page.stem} for page in (course, design) if page.exists()]},
    ]}
    if sols:
        toc["parts"].append({"caption": "Solutions", "chapters": [{"file": f"{params.SOLUTIONS}/{nb.stem}"}
                                                                 for nb in sols]})
    sphinx_config = {"html_show_copyright": False, "html_last_updated_fmt": None,
                     "suppress_warnings": ["myst.header", "myst.xref_missing", "mystnb.unknown_mime_type",
                                           "misc.highlighting_failure"]}
    mathjax = mathjax_dir()
    if mathjax is not None:
        for f in mathjax.rglob("*"):
            if f.is_file():
                _sync(f, src / "_mathjax" / "mathjax" / f.relative_to(mathjax))
        # not under _static/: Jupyter Book would add every .js file there to every page
        sphinx_config.update({"html_static_path": ["_mathjax"],
                              "mathjax_path": "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full",
                              "mathjax2_config": MATHJAX2_CONFIG, "mathjax3_config": None})
    config = {"title": TITLE, "author": "the mmsa authors", "copyright": "", "only_build_toc_files": True,
              "execute": {"execute_notebooks": "off"},
              "parse": {"myst_enable_extensions": ["dollarmath", "amsmath", "colon_fence"]},
              "html": {"use_repository_button": False, "home_page_in_navbar": True},
              "sphinx": {"config": sphinx_config}}
    _write(_yaml(config), src / "_config.yml")
    _write(_yaml(toc), src / "_toc.yml")
    # pages that are no longer selected must not linger in the site
    for f in list(src.rglob("*.ipynb")) + list(src.glob("*.md")):
        if f.relative_to(src).as_posix() not in wanted and "_build" not in f.parts:
            f.unlink()
    return used


def _pick_as(nb: Path, executed_dir: Path | None, rel: str) -> tuple[Path, str, str]:
    source, origin = _pick(nb, executed_dir)
    return source, rel, origin


def build(only=None, executed_dir: str | Path | None = None, quiet: bool = True) -> Path:
    """Build the site; returns the path of its landing page (``<out>/index.html``)."""
    from mmsa.book import paths

    root = paths.repo_root()
    try:
        import jupyter_book  # noqa: F401
    except ImportError:
        raise paths.BookError("the website needs Jupyter Book 1: pip install -e \".[dev]\" "
                             "(or pip install \"jupyter-book<2\" jupyter-server-mathjax)") from None
    if executed_dir is None:
        executed_dir = root / "build" / "notebooks"
    executed_dir = Path(executed_dir)
    if not executed_dir.is_absolute():
        executed_dir = root / executed_dir
    site = root / "build" / "site"
    src = site / "src"
    t0 = time.perf_counter()
    used = stage(src, only, executed_dir if executed_dir.is_dir() else None)
    executed = sum(page.endswith(".ipynb") and not origin.endswith("(committed)") for page, origin in used)
    print(f"[mmsa.book] site: {len(used)} page(s), {executed} from executed copies under "
          f"{paths.display_path(executed_dir)}/ (the others as committed)"
          + ("" if mathjax_dir() else "; jupyter-server-mathjax is not installed: equations load MathJax from a CDN"),
          flush=True)
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
           "build", str(src), "--builder", "html", "--path-output", str(site)]
    # Sphinx rebuilds only the pages that changed: when the set of pages changed, every page's
    # navigation changes and the pages left out must go, so the site is built afresh
    pages = json.dumps(sorted(page for page, _ in used))
    stamp = site / "pages.json"
    if not stamp.exists() or stamp.read_text() != pages:
        shutil.rmtree(site / "_build", ignore_errors=True)
    proc = subprocess.run(cmd, cwd=root, capture_output=quiet, text=True)
    if proc.returncode != 0:
        tail = "\n".join(((proc.stdout or "") + (proc.stderr or "")).splitlines()[-30:]) if quiet else ""
        raise paths.BookError(f"jupyter-book build failed (exit {proc.returncode}): {tail}")
    stamp.write_text(pages)
    index = site / "_build" / "html" / "index.html"
    print(f"[mmsa.book] site built in {time.perf_counter() - t0:.0f} s: {paths.display_path(index)}", flush=True)
    return index
