"""Claims as data, checked by one engine.

Three kinds of claim live in data files and are read here, nowhere else:

* ``data/claims/paper_claims.yaml``: what the three papers claim and how the book tests each claim
  (read by :mod:`mmsa.report`, which writes the reproduction report);
* ``data/claims/expectations.yaml``: what each chapter expects before its runs (read by
  :func:`findings`, the chapters' closing "What we found" tables);
* ``ci/claims.yaml``: what each notebook's own numbers must satisfy after a CI run (read by
  ``ci/test_claims.py``).

All name a number in a notebook's metrics file (``build/metrics/NN.json``, written by
``mmsa.book.save_metrics``) by a **path**: a list of dictionary keys, never a dotted string,
because keys such as ``"w/o DAM"`` or ``"0.5"`` contain slashes and dots.  In the paper claims and
the expectations the first key is the notebook (``["08", "paired", "w/o DAM", "complete",
"boot_low"]``); in ``ci/claims.yaml`` the notebook is the section the claim sits in.

One lookup (:func:`lookup`), one comparison (:func:`compare`) and one set of rules
(:mod:`mmsa.claim_rules`: a claim's ``rule.kind`` and how it becomes a verdict by the book's one
decision rule, :mod:`mmsa.verdict`).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from . import verdict as _verdict
from .claim_rules import (DECIDED, OPS, RULES, VERDICTS, Missing, _fmt, _try, as_path, compare, lookup, number,
                          show_path)

ROOT = Path(__file__).resolve().parent.parent
PAPER_CLAIMS = ROOT / "data" / "claims" / "paper_claims.yaml"
CI_CLAIMS = ROOT / "ci" / "claims.yaml"


def load_yaml(path: str | Path) -> Any:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- CI claims
def ci_claims(path: str | Path = CI_CLAIMS) -> list[tuple[str, dict]]:
    """``[(notebook, claim)]`` of ``ci/claims.yaml`` (``key`` and a string or list ``value`` are paths)."""
    data = load_yaml(path) or {}
    return [(str(nb), c) for nb, claims in data.items() for c in claims]


def check_ci_claim(metrics: dict, claim: dict) -> tuple[bool, str]:
    """Does one notebook's ``metrics`` meet ``claim``?  Returns (ok, message); raises
    :class:`Missing` when a key is not there."""
    value = lookup(metrics, claim["key"])
    target = claim.get("value")
    if isinstance(target, (str, list)):   # another key of the same file
        target = lookup(metrics, target)
    ok = compare(value, claim["op"], target)
    shown = "" if claim["op"] == "finite" else f" {claim['op']} {target}"
    return ok, f"{show_path(claim['key'])} = {value}{'' if ok else ' fails'}{shown}: {claim['why']}"


# --------------------------------------------------------------------------- paper numbers
def load_paper_tables(paper_dir: str | Path = ROOT / "data" / "paper_results") -> dict:
    """``{file name: [row dicts]}`` of every CSV in ``paper_dir``."""
    tables = {}
    for f in sorted(Path(paper_dir).glob("*.csv")):
        with open(f, newline="", encoding="utf-8") as fh:
            tables[f.name] = list(csv.DictReader(fh))
    return tables


def paper_value(tables: dict, ref: dict) -> float:
    """The ``value`` of the one row of ``tables[ref["file"]]`` that matches every other field of ``ref``."""
    file, filters = ref["file"], {k: v for k, v in ref.items() if k != "file"}
    rows = tables.get(file)
    if rows is None:
        raise KeyError(f"data/paper_results/{file} not found")
    hits = [r for r in rows if all(str(r.get(k)) == str(v) for k, v in filters.items())]
    if len(hits) != 1:
        raise KeyError(f"{file}: {len(hits)} rows match {filters} (need exactly 1)")
    return float(hits[0]["value"])


# --------------------------------------------------------------------------- paper claims
def paper_claims(path: str | Path = PAPER_CLAIMS) -> list[dict]:
    """The claims of ``paper_claims.yaml``, with each claim's ``paper`` expanded to its full name."""
    data = load_yaml(path)
    papers = data["papers"]
    return [{**c, "paper": papers.get(c["paper"], c["paper"])} for c in data["claims"]]



def evaluate(claim: dict, metrics: dict, tables: dict) -> dict:
    """One row of the report; never raises for missing metrics (verdict "not run")."""
    try:
        values = [paper_value(tables, ref) for ref in claim.get("paper_value", [])]
        paper_text = claim["paper_text"].format(*values) if values else claim["paper_text"]
    except (KeyError, IndexError, ValueError) as err:
        values, paper_text = [], f"(paper table unreadable: {err})"
    rule = dict(claim["rule"])
    if rule["kind"] == "real_data" and values:
        rule["_paper"] = values[0]
    row = {"paper": claim["paper"], "claim": claim["claim"], "paper's number": paper_text,
           "source": claim["source"], "measured in": " · ".join(claim["where"])}
    try:
        ours, v, detail = RULES[rule["kind"]](metrics, rule)
    except Missing as err:
        ours, v, detail = "—", "not run", str(err)
    except (TypeError, ValueError, ZeroDivisionError, KeyError) as err:
        ours, v, detail = "—", "not run", f"could not evaluate: {type(err).__name__}: {err}"
    row.update({"ours": ours, "verdict": v, "detail": detail, "rule": claim["why"]})
    return row


def validate(claims: Iterable[dict], tables: Optional[dict] = None) -> list[str]:
    """Problems in a list of paper claims (unknown rule kinds, missing fields, unreadable paper
    numbers); an empty list when every claim is well formed."""
    problems = []
    for i, c in enumerate(claims):
        name = c.get("claim", f"claim {i + 1}")
        for field in ("paper", "claim", "paper_text", "source", "where", "rule", "why"):
            if not c.get(field):
                problems.append(f"{name}: no {field}")
        where = c.get("where")
        if not (isinstance(where, list) and len(where) == 2 and str(where[0]).isdigit()):
            problems.append(f"{name}: where is [notebook, what], got {where!r}")
        kind = c.get("rule", {}).get("kind")
        if kind not in RULES:
            problems.append(f"{name}: unknown rule kind {kind!r}")
        if kind == "measure" and c["rule"].get("class") in ("sanity", "exploratory") and not c["rule"].get("because"):
            problems.append(f"{name}: a {c['rule']['class']} claim says why (because)")
        if tables is not None:
            try:
                c["paper_text"].format(*[paper_value(tables, r) for r in c.get("paper_value", [])])
            except (KeyError, IndexError, ValueError) as err:
                problems.append(f"{name}: paper number: {err}")
    return problems


def load_metrics(metrics_dir: str | Path) -> dict:
    """``{"NN": dict}`` for every readable ``NN.json`` in ``metrics_dir`` (missing folder: ``{}``)."""
    out = {}
    folder = Path(metrics_dir)
    if not folder.is_dir():
        return out
    for f in sorted(folder.glob("[0-9][0-9].json")):
        try:
            out[f.stem] = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue   # a half-written or broken file counts as "not run"
    return out


# --------------------------------------------------------------------------- a chapter's findings
#: The book's own expectations, stated in a chapter before its runs (the papers' claims are in
#: PAPER_CLAIMS); same fields and rules as a paper claim, ``paper`` naming the paper it bears on.
EXPECTATIONS = ROOT / "data" / "claims" / "expectations.yaml"
#: metrics folders of runs with reduced parameters (``build/<name>/metrics``): their verdicts need the full run
REDUCED_RUNS = ("smoke", "classroom")

MEANS = {
    "reproduced": "Supported at the book's size on SynthMSA{paper}; the published data sets are not tested here.",
    "contradicted": "The opposite holds at the book's size on SynthMSA{paper}: the chapter discusses why.",
    "inconclusive": "Neither supported nor refuted{paper}: a true effect smaller than {mde} would go unseen "
                    "with these seeds and clips.",
    "exploratory": "A hint from one seed or one timing run{paper}, not evidence either way.",
    "sanity": "A check that the code does what it should (true by construction), not evidence for the paper.",
    "not testable offline": "Needs the papers' data sets or hardware, which the book does not have offline.",
    "not testable from the saved metrics": "The chapter does not save the numbers this needs.",
    "not run": "Not measured in this run.",
}


def chapter_claims(notebook: str | int) -> list[dict]:
    """The claims a chapter tests, in the order of the files: the book's own expectations
    (EXPECTATIONS), then the papers' claims measured in it (``where[0]``)."""
    nn = f"{int(notebook):02d}"
    own = paper_claims(EXPECTATIONS) if EXPECTATIONS.exists() else []
    return [c for c in own + paper_claims() if str(c["where"][0]) == nn]


def _mde_of(metrics: dict, rule: dict) -> Optional[float]:
    lo, hi = (_try(metrics, rule[k])[0] if k in rule else None for k in ("low", "high"))
    return _verdict.mde(lo, hi) if lo is not None and hi is not None and hi >= lo else None


def findings(notebook: str | int, metrics_dir: str | Path, tables: Optional[dict] = None) -> list[dict]:
    """One row per claim of the chapter: the expectation, our number, the verdict (by the rules of
    the report) and one sentence on what it means for the paper.  ``metrics_dir`` is the folder
    the chapter saved its metrics in (``mmsa.book.metrics_dir()``); in a folder of a reduced run
    (``build/smoke``, ``build/classroom``) every decided verdict is marked as needing the full run."""
    nn = f"{int(notebook):02d}"
    metrics = load_metrics(metrics_dir)
    tables = load_paper_tables() if tables is None else tables
    reduced = Path(metrics_dir).resolve().parent.name in REDUCED_RUNS
    rows = []
    for c in chapter_claims(nn):
        r = evaluate(c, metrics, tables)
        book_own = c.get("kind") == "expectation"
        mde = _mde_of(metrics, c["rule"]) if r["verdict"] == "inconclusive" else None
        means = c.get("means", {}).get(r["verdict"]) or MEANS.get(r["verdict"], "")
        if r["verdict"] == "inconclusive" and mde is None:
            means = "Not decided: the run saves no interval for this number, so the rule cannot decide it."
        means = means.format(paper="" if book_own else f" for {c['paper'].split(' (')[0]}'s claim",
                             mde=_fmt(mde) if mde is not None else "the minimum detectable effect")
        verdict = r["verdict"]
        if reduced and verdict in ("reproduced", "contradicted", "inconclusive", "exploratory"):
            verdict += " (reduced run: needs the full run)"
        rows.append({"expected before the run": ("" if book_own else f"{c['paper'].split(' (')[0]}: ") + c["claim"],
                     "measured": r["ours"], "verdict": verdict, "what it means": means,
                     "paper": r["paper's number"], "detail": r["detail"]})
    return rows


def findings_markdown(notebook: str | int, metrics_dir: str | Path) -> str:
    """The chapter's "What we found" table as Markdown (``findings``), with a line on the run."""
    rows = findings(notebook, metrics_dir)
    if not rows:
        return "_This chapter states no expectation that a run decides._"
    reduced = Path(metrics_dir).resolve().parent.name in REDUCED_RUNS
    cell = lambda x: str(x).replace("|", "\\|").replace("\n", " ")
    lines = ["| expected before the run | measured | verdict | what it means | how it was decided |",
             "|---|---|---|---|---|"]
    lines += [f"| {cell(r['expected before the run'])} | {cell(r['measured'])} | **{cell(r['verdict'])}** | "
              f"{cell(r['what it means'])} | {cell(r['detail'])} |" for r in rows]
    counts = {}
    for r in rows:
        key = r["verdict"].split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    head = ", ".join(f"{n} {v}" for v, n in counts.items())
    note = (" This run used reduced (classroom/CI) parameters: its verdicts need the full run "
            f"(`python -m mmsa.book run --only {int(notebook):02d}`)." if reduced else "")
    return f"{len(rows)} expectations: {head}.{note}\n\n" + "\n".join(lines)


def show_findings(notebook: str | int, metrics_dir: str | Path):
    """Display the "What we found" table in a notebook (Markdown)."""
    from IPython.display import Markdown, display

    display(Markdown(findings_markdown(notebook, metrics_dir)))


__all__ = ["VERDICTS", "DECIDED", "OPS", "Missing", "lookup", "number", "compare", "as_path", "show_path",
           "ci_claims", "check_ci_claim", "load_paper_tables", "paper_value", "paper_claims", "RULES",
           "evaluate", "validate", "load_metrics", "EXPECTATIONS", "MEANS", "chapter_claims",
           "findings", "findings_markdown", "show_findings"]
