"""How a claim's measurement becomes a verdict: the lookup of a number in the metrics and the
rules of the claim kinds (``rule.kind``), read by :mod:`mmsa.claims`.

One decision rule for every comparison: :func:`mmsa.verdict.decide` on a saved paired 95 %
interval, printed with its minimum detectable effect (:func:`mmsa.verdict.mde`).  The kinds:

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

import math
import operator
from typing import Any, Optional

from . import verdict as _verdict

#: Verdicts of the report, in the order it counts them.  The first five are :data:`mmsa.verdict.VERDICTS`.
VERDICTS = _verdict.VERDICTS + ("not testable from the saved metrics", "not testable offline", "not run")
DECIDED = ("reproduced", "contradicted", "inconclusive")
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


__all__ = ["VERDICTS", "DECIDED", "OPS", "RULES", "Missing", "as_path", "show_path", "lookup", "number", "compare",
           "rule_paired", "rule_measure", "rule_selection", "rule_real_data", "rule_offline", "rule_device"]
