"""The notebook cleaner: strip volatile metadata, injected parameters and machine paths
(``python -m mmsa.book clean [--check] [PATH ...]``)."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from mmsa.book import paths as book_paths
from mmsa.book.paths import BookError, display_path

_VOLATILE_CELL_KEYS = ("papermill", "execution", "ExecuteTime")
_DROP_CELL_TAGS = ("injected-parameters", "papermill-error-cell-tag")
_TEXT_MIME = ("text/plain", "text/html", "text/markdown", "text/latex", "application/javascript")
_START = r"(?<![\w.~<>-])"  # a path starts after a space, quote, bracket ... not inside a word
_SEG = r"/[^\s/\"'<>:()\[\]{},;|]+"
_PATH_RULES = [
    (re.compile(_START + rf"(?:{_SEG})*?/(?:site|dist)-packages/"), "<site-packages>/"),
    (re.compile(_START + rf"(?:{_SEG})*?/ipykernel_\d+/\d+\.py"), "<cell>"),
    (re.compile(_START + r"(?:/private)?(?:/tmp|/var/folders/[^\s/]+/[^\s/]+/T)/tmp[\w-]+"), "<tmp>"),
]
_TOP = {"notebooks", "build", "figures", "data", "mmsa", "ci", "tests", "docs", "benchmarks"}
_ABS_PATH = re.compile(_START + rf"(?:{_SEG})+/?")


def _repo_relative(match: re.Match) -> str:
    """``/any/checkout/build/metrics/00.json`` -> ``<repo>/build/metrics/00.json``.

    The checkout is the longest prefix followed by a top-level folder of the repository, not
    itself inside one (``mmsa/data``, ``build/smoke/figures`` stay whole).
    """
    path = match.group(0)
    comps = path.strip("/").split("/")
    for j in range(len(comps) - 1, 0, -1):
        if comps[j] in _TOP and comps[j - 1] not in _TOP and "build" not in comps[:j] and (
                j < len(comps) - 1 or path.endswith("/")):
            return "<repo>/" + "/".join(comps[j:]) + ("/" if path.endswith("/") else "")
    return path
_MACHINE_PATH = re.compile(_START + r"/(?:work|home|Users|root|tmp|private|var|opt|usr|mnt|scratch|srv|nfs|"
                           r"gpfs|lustre|content|kaggle)/[^\s\"'<>]*")


def scrub_paths(text: str) -> tuple[str, list[str]]:
    """Absolute machine paths -> ``<repo>/…``, ``<site-packages>/…``, ``<tmp>``, ``<cell>``, ``~``.

    Returns the new text and the absolute paths that no rule could rewrite.
    """
    root = str(book_paths.repo_root())
    if len(root) > 1:
        text = text.replace(root + "/", "<repo>/")
        text = re.sub(re.escape(root) + r"(?![\w/.-])", "<repo>", text)
    for pattern, repl in _PATH_RULES:
        text = pattern.sub(repl, text)
    text = _ABS_PATH.sub(_repo_relative, text)
    home = str(Path.home())
    if len(home) > 1:
        text = re.sub(re.escape(home) + r"(?=[/\s\"']|$)", "~", text)
    return text, _MACHINE_PATH.findall(text)


def _scrub(value, changed: list, left: list):
    if isinstance(value, list):
        return [_scrub(v, changed, left) for v in value]
    if isinstance(value, str):
        new, rest = scrub_paths(value)
        if new != value:
            changed.append(True)
        left.extend(rest)
        return new
    return value


def normalise_ids(raw: dict, name: str = "") -> int:
    """Give every cell of a notebook's JSON a valid, unique id, deterministically; returns how many
    were missing, invalid or duplicated (done on the JSON: nbformat would repair them at random)."""
    seen, fixed = set(), 0
    for i, cell in enumerate(raw.get("cells", [])):
        cid = cell.get("id")
        if not isinstance(cid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", cid) or cid in seen:
            source = "".join(cell.get("source", ""))
            digest = hashlib.sha1(f"{name}:{i}:{source}".encode()).hexdigest()
            k = 8
            while digest[:k] in seen:
                k += 1
            cell["id"] = digest[:k]
            fixed += 1
        seen.add(cell["id"])
    if raw.get("nbformat") == 4 and raw.get("nbformat_minor", 0) < 5:
        raw["nbformat_minor"] = 5
    return fixed


def clean_notebook(nb, name: str = "") -> tuple[list[str], list[str]]:
    """Clean ``nb`` (an nbformat node) in place; returns (what was changed, unfixable problems)."""
    found, problems = [], []
    injected = [c for c in nb.cells if set(c.get("metadata", {}).get("tags", [])) & set(_DROP_CELL_TAGS)]
    for c in injected:
        tags = c.metadata.get("tags", [])
        what = "injected-parameters" if "injected-parameters" in tags else "papermill error-marker"
        found.append(f"{what} cell removed: {' '.join(c.source.split())[:80]!r}")
    nb.cells = [c for c in nb.cells if not any(c is x for x in injected)]
    if "papermill" in nb.metadata:
        found.append("papermill run metadata")
        del nb.metadata["papermill"]
    volatile = 0
    path_cells = []
    for i, cell in enumerate(nb.cells):
        meta = cell.setdefault("metadata", {})
        for key in _VOLATILE_CELL_KEYS:
            if key in meta:
                del meta[key]
                volatile += 1
        if "tags" in meta and not meta["tags"]:
            del meta["tags"]
        if cell.cell_type != "code":
            continue
        changed, left = [], []
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = _scrub(out["text"], changed, left)
            if "traceback" in out:
                out["traceback"] = _scrub(out["traceback"], changed, left)
            if "evalue" in out:
                out["evalue"] = _scrub(out["evalue"], changed, left)
            for mime in _TEXT_MIME:
                if mime in out.get("data", {}):
                    out["data"][mime] = _scrub(out["data"][mime], changed, left)
        if changed:
            path_cells.append(i)
        for p in dict.fromkeys(left):
            problems.append(f"cell {i}: absolute path {p!r} in an output (print it relative to the repository)")
    if volatile:
        found.append(f"execution metadata of {volatile} cell(s)")
    if path_cells:
        found.append(f"absolute paths in the outputs of cell(s) {', '.join(map(str, path_cells))}")
    return found, problems


def _notebook_files(paths) -> list[Path]:
    files = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in f.parts)
        elif p.suffix == ".ipynb" and p.exists():
            files.append(p)
        else:
            raise BookError(f"{p}: not a notebook (.ipynb) or a folder of notebooks")
    return files


def clean(paths=None, check: bool = False, quiet: bool = False) -> int:
    """Strip volatile metadata; ``check``: only report (exit 1 if any notebook needs cleaning)."""
    import nbformat

    files = _notebook_files(paths or [book_paths.repo_root() / "notebooks"])
    offending = 0
    for f in files:
        text = f.read_text()
        raw = json.loads(text)
        bad_ids = normalise_ids(raw, f.name)
        nb = nbformat.reads(json.dumps(raw), as_version=4)
        found, problems = clean_notebook(nb, f.name)
        if bad_ids:
            found.append(f"{bad_ids} missing, invalid or duplicate cell id(s)")
        new_text = nbformat.writes(nb) + "\n"
        changed = json.loads(new_text) != json.loads(text)
        if check:
            if changed or problems:
                offending += 1
                print(f"{display_path(f)}: needs `python -m mmsa.book clean`: "
                      + "; ".join(found + problems or ["metadata not normalised"]))
            continue
        if changed:
            f.write_text(new_text)
        if problems:
            offending += 1
        if (changed and not quiet) or problems:
            print(f"{display_path(f)}: " + ("cleaned: " + "; ".join(found or ["metadata normalised"]) if changed else "")
                  + ("; NOT fixed: " + "; ".join(problems) if problems else ""))
    if check:
        print(f"[mmsa.book] clean --check: {len(files) - offending}/{len(files)} notebook(s) clean"
              + (f"; {offending} need `python -m mmsa.book clean`" if offending else ""))
    return 1 if offending else 0
