"""Claims as data, checked by one engine.

Two kinds of claim live in data files and are read here, nowhere else:

* ``data/claims/paper_claims.yaml``: what the three papers claim and how the book tests each claim
  (read by :mod:`mmsa.report`, which writes the reproduction report);
* ``ci/claims.yaml``: what each notebook's own numbers must satisfy after a CI run (read by
  ``ci/test_claims.py``).

Both name a number in a notebook's metrics file (``build/metrics/NN.json``, written by
``mmsa.book.save_metrics``) by a **path**: a list of dictionary keys, never a dotted string,
because keys such as ``"w/o DAM"`` or ``"0.5"`` contain slashes and dots.  In the paper claims the
first key is the notebook (``["08", "paired", "w/o DAM", "complete", "boot_low"]``); in
``ci/claims.yaml`` the notebook is the section the claim sits in.

One lookup (:func:`lookup`), one comparison (:func:`compare`), and one decision rule for every
comparison: :func:`mmsa.verdict.decide` on a saved paired 95 % interval, printed with its minimum
detectable effect (:func:`mmsa.verdict.mde`).  The kinds of paper claim (``rule.kind``):

``paired``
    a difference between two models (or settings) with a direction.  *reproduced* / *contradicted*
    / *inconclusive* by the saved paired interval; where the notebook saves no interval the verdict
    is *inconclusive — no paired interval saved* and the detail names the missing key.  A claim
    measured with one seed carries ``one_seed`` (a reason) and is *exploratory*.
``measure``
    a number against a stated target (``op`` ``threshold``), e.g. a ratio ≥ 2.  Decided like a
    paired difference when an interval of the number is saved (``low``/``high``), otherwise
    *inconclusive*; ``baseline`` says what the reference model scores on the same test.
    ``class: exploratory`` (one seed, one timing run) or ``class: sanity`` (true by construction or
    by a chosen size; counted apart) replace the decision.
``selection``
    which setting of a study is best (depth, learning rate): judged on the **validation** numbers
    (``field``); where the metrics hold only test numbers the claim is *not testable from the saved
    metrics* and the detail names the missing key.  One seed per row: *exploratory*.
``real_data``, ``device``, ``offline``
    claims that need the papers' data sets or their GPU.
"""
from __future__ import annotations

import csv
import json
import math
import operator
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from . import verdict as _verdict

#: Verdicts of the report, in the order it counts them.  The first five are :data:`mmsa.verdict.VERDICTS`.
VERDICTS = _verdict.VERDICTS + ("not testable from the saved metrics", "not testable offline", "not run")
DECIDED = ("reproduced", "contradicted", "inconclusive")

ROOT = Path(__file__).resolve().parent.parent
PAPER_CLAIMS = ROOT / "data" / "claims" / "paper_claims.yaml"
CI_CLAIMS = ROOT / "ci" / "claims.yaml"

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}


# --------------------------------------------------------------------------- the lookup
class Missing(KeyError):
    """A metrics file or key that is not there."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def as_path(path) -> tuple:
    """A key path as a tuple of keys; a single key (a string) is a path of length 1."""
    if isinstance(path, str):
        return (path,)
    if isinstance(path, (list, tuple)) and path and all(isinstance(p, (str, int)) for p in path):
        return tuple(str(p) for p in path)
    raise TypeError(f"a key path is a non-empty list of keys, got {path!r}")


def show_path(path) -> str:
    return " → ".join(as_path(path))


def lookup(data: dict, path, where: str = "") -> Any:
    """The value at ``path`` (a list of keys) in nested dictionaries; :class:`Missing` names the
    first key that is not there (``where`` prefixes the message, e.g. a file name)."""
    path = as_path(path)
    value = data
    for i, part in enumerate(path):
        if not isinstance(value, dict) or part not in value:
            have = f" (has {', '.join(map(str, sorted(value)))})" if isinstance(value, dict) and len(value) <= 12 else ""
            raise Missing(f"{where}{' has' if where else ''} no {show_path(path[:i + 1])}{have}".strip())
        value = value[part]
    return value


def number(value) -> float:
    """A float from a metrics value; :class:`Missing` for anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Missing(f"expected a number, found {value!r}")
    return float(value)


def compare(value, op: str, target) -> bool:
    """``value op target``; ``op`` is one of ``>= > <= < ==`` or ``finite`` (target ignored)."""
    if op == "finite":
        return value is not None and not isinstance(value, bool) and isinstance(value, (int, float)) \
            and math.isfinite(value)
    if op not in OPS:
        raise ValueError(f"unknown comparison {op!r}; use one of {sorted(OPS)} or 'finite'")
    return bool(OPS[op](value, target))


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


def _fmt(x, digits: int = 3, scale: float = 1.0, unit: str = "", sign: bool = False) -> str:
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return f"{x * scale:{'+' if sign else ''}.{digits}f}{unit}"
    return str(x)


def _get(metrics: dict, ref) -> Any:
    """A value of the metrics of every notebook (``{"NN": dict}``) at ``ref`` = [notebook, key, …]."""
    ref = as_path(ref)
    if ref[0] not in metrics:
        raise Missing(f"{ref[0]}.json not found: notebook {ref[0]} has not run (or saved no metrics)")
    if len(ref) == 1:
        return metrics[ref[0]]
    return lookup(metrics[ref[0]], ref[1:], where=f"{ref[0]}.json")


def _try(metrics: dict, ref) -> tuple[Optional[float], Optional[str]]:
    try:
        return number(_get(metrics, ref)), None
    except Missing as err:
        return None, str(err)


def _style(rule: dict) -> dict:
    return {"digits": rule.get("digits", 3), "scale": rule.get("scale", 1.0), "unit": rule.get("unit", "")}


def _interval_text(diff: Optional[float], lo: float, hi: float, rule: dict, what: str = "paired") -> str:
    st = _style(rule)
    d = "" if diff is None else _fmt(diff, sign=True, **st) + " "
    return (f"{d}[{_fmt(lo, sign=True, **st)}, {_fmt(hi, sign=True, **st)}] (95 % {what} interval), "
            f"minimum detectable effect {_fmt(_verdict.mde(lo, hi), **st)}")


def _shown(metrics: dict, rule: dict) -> tuple[list[tuple[str, Optional[float]]], list[str]]:
    """The ``show`` values ((label, value or None)) and the errors of those not found; an empty
    list when none is found."""
    vals, missing = [], []
    for label, ref in rule.get("show", []):
        v, err = _try(metrics, ref)
        vals.append((label, v))
        if v is None:
            missing.append(err)
    return (vals if len(missing) < len(vals) else []), missing


def rule_paired(metrics: dict, rule: dict) -> tuple[str, str, str]:
    """A paired difference with the paper's direction ``sign`` (+1: the difference should be > 0)."""
    st, sign = _style(rule), int(rule["sign"])
    shown, missing = _shown(metrics, rule)
    diff, _ = _try(metrics, rule["diff"])
    lo, err_lo = _try(metrics, rule["low"])
    hi, err_hi = _try(metrics, rule["high"])
    if not shown and diff is None and lo is None:
        raise Missing(missing[0] if missing else err_lo)
    ours = " vs ".join("—" if v is None else _fmt(v, **st) for _, v in shown) if shown else _fmt(diff, sign=True, **st)
    named = ", ".join(f"{label} {'—' if v is None else _fmt(v, **st)}" for label, v in shown)
    stds = [(label, _try(metrics, ref)[0]) for label, ref in rule.get("std", [])]
    stds_text = ", ".join(f"{label} {_fmt(v, **st)}" for label, v in stds if v is not None)
    direction = f"the paper's direction: {rule.get('direction', 'difference > 0' if sign > 0 else 'difference < 0')}"
    parts = []
    if lo is not None and hi is not None:
        v = _verdict.decide(lo, hi, sign)
        parts.append(_interval_text(diff, lo, hi, rule))
    else:
        v = "inconclusive"
        ref = as_path(rule["low"] if lo is None else rule["high"])
        parts.append(f"no paired interval saved ({ref[0]}.json has no {show_path(ref[1:])}); "
                     "minimum detectable effect unknown")
        if named:
            parts.append(f"means {named}")
    if stds_text:
        parts.append(f"seed std {stds_text}")
    if "flag" in rule:
        try:
            within = _get(metrics, rule["flag"])
            parts.append("the notebook's own paired test: its interval " + ("contains 0" if within else "excludes 0"))
        except Missing:
            pass
    parts.append(direction)
    if rule.get("one_seed"):
        parts.append(f"one seed ({rule['one_seed']}): it can suggest, not decide")
        v = "exploratory"
    return ours, v, "; ".join(parts)


def _measured(metrics: dict, rule: dict) -> float:
    v = _get(metrics, rule["value"])
    v = float(v) if isinstance(v, bool) and rule.get("op") == "==" else number(v)   # a yes/no check: 1/0
    if "denominator" in rule:
        v = v / number(_get(metrics, rule["denominator"]))
    return abs(v) if rule.get("abs") else v


def _test(metrics: dict, rule: dict) -> tuple[str, bool, str]:
    """(ours, holds, how) of a ``measure`` rule's ``test`` (default: ``value op threshold``)."""
    st = _style(rule)
    test = rule.get("test", "threshold")
    if test == "threshold":
        v = _measured(metrics, rule)
        return _fmt(v, **st), compare(v, rule["op"], rule["threshold"]), f"{rule['op']} {rule['threshold']:g}"
    if test == "range":
        v = _measured(metrics, rule)
        return _fmt(v, **st), rule["low"] <= v <= rule["high"], f"within [{rule['low']:g}, {rule['high']:g}]"
    if test == "order":      # values increase in the order given
        vals = [(n, number(_get(metrics, ref))) for n, ref in rule["values"]]
        ok = all(a < b for (_, a), (_, b) in zip(vals, vals[1:]))
        return ", ".join(f"{n} {_fmt(v, **st)}" for n, v in vals), ok, " < ".join(n for n, _ in vals)
    if test == "all_positive":
        vals = [(n, number(_get(metrics, ref))) for n, ref in rule["values"]]
        return ", ".join(f"{n} {_fmt(v, sign=True, **st)}" for n, v in vals), all(v > 0 for _, v in vals), "every value > 0"
    if test == "spread":     # the values of a table differ by at most ``threshold``
        table = _get(metrics, rule["table"])
        if not isinstance(table, dict) or len(table) < 2:
            raise Missing(f"{show_path(rule['table'])} has fewer than two entries in this run")
        vals = {k: number(v) for k, v in table.items()}
        spread = max(vals.values()) - min(vals.values())
        ours = f"range {_fmt(spread, **st)} (" + ", ".join(f"{k}: {_fmt(v, **st)}" for k, v in vals.items()) + ")"
        return ours, spread <= rule["threshold"], f"range ≤ {_fmt(rule['threshold'], **st)}"
    raise ValueError(f"unknown measure test {test!r}")


def rule_measure(metrics: dict, rule: dict) -> tuple[str, str, str]:
    """A number against the paper's (or the book's) target; see the module docstring."""
    ours, holds, how = _test(metrics, rule)
    st = _style(rule)
    parts = [f"as measured, {'meets' if holds else 'misses'} the target ({how})"]
    for label, ref in rule.get("baseline", []):
        v, err = _try(metrics, ref)
        parts.append(f"{label} scores {_fmt(v, **st)} on the same test" if v is not None else f"{label}: {err}")
    for label, ref in rule.get("context", []):
        v, err = _try(metrics, ref)
        if v is not None:
            parts.append(f"{label} {_fmt(v, **st)}")
    cls = rule.get("class", "measurement")
    if cls == "sanity":
        return ours + ("" if holds else " (check fails)"), "sanity", f"check {'passes' if holds else 'FAILS'} ({how}); true by construction: {rule['because']}"
    if cls == "exploratory":
        return ours, "exploratory", "; ".join(parts + [f"{rule['because']}: it can suggest, not decide"])
    lo = _try(metrics, rule["low"])[0] if "low" in rule else None
    hi = _try(metrics, rule["high"])[0] if "high" in rule else None
    if lo is not None and hi is not None and rule.get("test", "threshold") == "threshold":
        t = rule["threshold"]
        sign = 1 if rule["op"] in (">", ">=") else -1
        v = _verdict.decide(lo - t, hi - t, sign)
        parts.insert(0, _interval_text(None, lo, hi, rule, what="") + f" against the target {t:g}")
    else:
        v = "inconclusive"
        if "low" in rule:
            ref = as_path(rule["low"] if lo is None else rule["high"])
            missing = f"{ref[0]}.json has no {show_path(ref[1:])}"
        else:
            missing = "the notebook computes none"
        parts.insert(0, f"no interval saved ({missing}); minimum detectable effect unknown")
    return ours, v, "; ".join(parts)


def rule_selection(metrics: dict, rule: dict) -> tuple[str, str, str]:
    """Which row of a study is best, judged on the validation ``field`` (lower is better unless
    ``higher_is_better``); never on the test numbers."""
    table = _get(metrics, rule["table"])
    if not isinstance(table, dict) or not table:
        raise Missing(f"{show_path(rule['table'])} is not a non-empty table")
    st = _style(rule)
    test_field = rule.get("test_field")
    lacking = [k for k, row in table.items() if not isinstance(row, dict) or rule["field"] not in row]
    if lacking:
        shown = ""
        if test_field and all(isinstance(r, dict) and test_field in r for r in table.values()):
            shown = f"test {test_field}: " + ", ".join(f"{k}: {_fmt(number(r[test_field]), **st)}" for k, r in table.items())
        where = show_path(list(as_path(rule["table"])) + [lacking[0]])
        return (shown or "—", "not testable from the saved metrics",
                f"a selection is judged on validation numbers; {where} has no {rule['field']!r}"
                + (f" (only the test {test_field!r})" if test_field else ""))
    vals = {k: number(r[rule["field"]]) for k, r in table.items()}
    pick = max if rule.get("higher_is_better") else min
    best = pick(vals, key=vals.get)
    if rule["expect"] not in vals:
        raise Missing(f"{show_path(rule['table'])} has no entry {rule['expect']!r} (has {sorted(vals)})")
    ordered = sorted(vals.values(), reverse=bool(rule.get("higher_is_better")))
    margin = abs(ordered[1] - ordered[0]) if len(ordered) > 1 else float("nan")
    ours = f"validation {rule['field']}: " + ", ".join(f"{k}: {_fmt(v, **st)}" for k, v in vals.items())
    agree = "agrees with" if best == rule["expect"] else "differs from"
    detail = (f"best on validation: {best} (margin to the next {_fmt(margin, **st)}), which {agree} the paper's "
              f"{rule['expect']}; {rule.get('because', 'one seed per row')}: a selection without an interval "
              "can suggest, not decide")
    return ours, "exploratory", detail


def rule_real_data(metrics: dict, rule: dict) -> tuple[str, str, str]:
    """Needs a real data set: testable only when the notebook ran on it (its ``dataset`` key)."""
    v = number(_get(metrics, rule["value"]))
    try:
        ds = _get(metrics, [as_path(rule["value"])[0], "dataset"])
    except Missing:
        ds = None
    if ds != rule["dataset"]:
        return (f"{_fmt(v)} on {ds or 'SynthMSA'}", "not testable offline",
                f"needs the real {rule['dataset'].upper()} features (run with dataset={rule['dataset']}); "
                "synthetic numbers are not comparable")
    ok = abs(v - rule["_paper"]) <= rule["tolerance"]
    return (_fmt(v), "inconclusive",
            f"no interval saved for the difference to the published number; as measured it is "
            f"{'within' if ok else 'outside'} ±{rule['tolerance']:g} of the paper")


def rule_offline(metrics: dict, rule: dict) -> tuple[str, str, str]:
    """Not testable with the book's data or hardware; ``show`` an informative number of ours if any."""
    ours = "—"
    if "show" in rule:
        v, _ = _try(metrics, rule["show"])
        ours = "—" if v is None else _fmt(v, rule.get("digits", 3), unit=rule.get("unit", ""))
    return ours, "not testable offline", rule["reason"]


def rule_device(metrics: dict, rule: dict) -> tuple[str, str, str]:
    """A GPU claim, from one timing run (exploratory): tested when the notebook ran on CUDA; on a
    CPU a value already meeting the target meets it a fortiori, anything else is not testable offline."""
    v = number(_get(metrics, rule["value"]))
    device = str(_get(metrics, [as_path(rule["value"])[0], "device"]))
    ok = compare(v, rule["op"], rule["threshold"])
    ours = f"{_fmt(v, rule.get('digits', 3), unit=rule.get('unit', ''))} ({device})"
    how = f"{rule['op']} {rule['threshold']:g}"
    if device.startswith("cuda") or ok:
        where = "" if device.startswith("cuda") else ", even on the CPU"
        return ours, "exploratory", f"as measured, {'meets' if ok else 'misses'} the target ({how}){where}; one timing run"
    return ours, "not testable offline", "a GPU claim; this run had no GPU (run notebook 10 with device=cuda)"


RULES = {"paired": rule_paired, "measure": rule_measure, "selection": rule_selection,
         "real_data": rule_real_data, "offline": rule_offline, "device": rule_device}


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
