"""mmsa.report: every claim's paper number resolves, each rule gives the right verdict on hand-made
metrics, missing metrics never crash (verdict "not run"), and the Markdown report is written."""
import json

import pytest

from mmsa import report
from mmsa.report import Key, Paper


@pytest.fixture(scope="module")
def tables():
    return report.load_paper_tables("data/paper_results")


def test_every_paper_number_of_the_claims_list_resolves(tables):
    for claim in report.CLAIMS:
        values = [report.paper_value(tables, ref) for ref in claim.get("paper_value", [])]
        claim["paper_text"].format(*values)     # the template fits the numbers
        assert claim["rule"]["kind"] in report.RULES, claim["claim"]
        assert claim["why"] and claim["source"]


def test_claims_cover_the_three_papers():
    papers = {c["paper"].split(" (")[0] for c in report.CLAIMS}
    assert papers == {"DAST-GAN", "UFEN+MTFN", "CM-STA+CG+TCMFI"}
    assert len(report.CLAIMS) >= 30


def test_paper_value_reads_the_published_row(tables):
    assert report.paper_value(tables, Paper("dast_gan_complete.csv", table="Table 3", dataset="mosi",
                                            model="DAST-GAN", metric="mae")) == pytest.approx(0.698)
    with pytest.raises(KeyError, match="rows match"):
        report.paper_value(tables, Paper("dast_gan_complete.csv", metric="mae"))   # ambiguous


def _row(rule, metrics, tables=None):
    claim = {"paper": "X (y)", "claim": "c", "paper_value": [], "paper_text": "qualitative", "source": "s",
             "where": ("03", "k"), "rule": rule, "why": "w"}
    return report.evaluate_claim(claim, metrics, tables or {})


def test_less_uses_twice_the_larger_seed_std():
    rule = {"kind": "less", "a": Key("03", "a"), "b": Key("03", "b"), "std": [Key("03", "sa"), Key("03", "sb")]}
    m = lambda a, b, s: {"03": {"a": a, "b": b, "sa": s, "sb": s / 2}}
    assert _row(rule, m(0.70, 0.80, 0.04))["verdict"] == "reproduced"        # 0.10 > 2 x 0.04
    assert _row(rule, m(0.70, 0.75, 0.04))["verdict"] == "within noise"      # 0.05 < 0.08
    assert _row(rule, m(0.90, 0.80, 0.04))["verdict"] == "not reproduced"
    one_seed = _row(rule, m(0.80, 0.81, 0.0))
    assert one_seed["verdict"] == "reproduced" and "one seed" in one_seed["detail"]
    assert _row({**rule, "greater": True}, m(0.70, 0.80, 0.01))["verdict"] == "not reproduced"


def test_less_with_a_floor_of_two_test_samples():
    rule = {"kind": "less", "a": Key("06", "x"), "b": Key("06", "y"), "std": [Key("06", "s")],
            "floor_samples": Key("06", "n")}
    metrics = {"06": {"x": 0.70, "y": 0.705, "s": 0.0, "n": 200}}   # 0.005 < 2/200
    assert _row(rule, metrics)["verdict"] == "within noise"


def test_interval_and_flag_rules():
    rule = {"kind": "interval", "expect": "positive", "diff": Key("08", "d"), "low": Key("08", "lo"),
            "high": Key("08", "hi")}
    assert _row(rule, {"08": {"d": 0.02, "lo": 0.01, "hi": 0.03}})["verdict"] == "reproduced"
    assert _row(rule, {"08": {"d": 0.0, "lo": -0.01, "hi": 0.01}})["verdict"] == "within noise"
    assert _row(rule, {"08": {"d": -0.02, "lo": -0.03, "hi": -0.01}})["verdict"] == "not reproduced"
    flag = {"kind": "flag", "diff": Key("07", "d"), "within_noise": Key("07", "w")}
    assert _row(flag, {"07": {"d": -0.1, "w": False}})["verdict"] == "reproduced"
    assert _row(flag, {"07": {"d": -0.1, "w": True}})["verdict"] == "within noise"
    assert _row(flag, {"07": {"d": 0.1, "w": False}})["verdict"] == "not reproduced"


def test_threshold_range_order_argbest_spread():
    t = {"kind": "threshold", "value": Key("03", "r"), "denominator": Key("03", "m"), "op": "<=", "threshold": 0.02}
    assert _row(t, {"03": {"r": 0.01, "m": 1.0}})["verdict"] == "reproduced"
    assert _row(t, {"03": {"r": 0.03, "m": 1.0}})["verdict"] == "not reproduced"
    r = {"kind": "range", "value": Key("10", "x"), "low": 1.0, "high": 1.3}
    assert [_row(r, {"10": {"x": v}})["verdict"] for v in (0.9, 1.15, 1.4)] == \
        ["not reproduced", "reproduced", "not reproduced"]
    o = {"kind": "order", "names": ["a", "b"], "values": [Key("07", "a"), Key("07", "b")]}
    assert _row(o, {"07": {"a": 1, "b": 2}})["verdict"] == "reproduced"
    assert _row(o, {"07": {"a": 2, "b": 1}})["verdict"] == "not reproduced"
    a = {"kind": "argbest", "table": Key("05", "t"), "field": "mae", "expect": "l = 2"}
    study = {"l = 1": {"mae": 0.8}, "l = 2": {"mae": 0.7}, "l = 3": {"mae": 0.75}}
    row = _row(a, {"05": {"t": study}})
    assert row["verdict"] == "reproduced" and "0.050" in row["detail"]
    s = {"kind": "spread", "table": Key("06", "acc"), "std": [Key("06", "s")], "floor_samples": Key("06", "n")}
    assert _row(s, {"06": {"acc": {"a": 0.80, "b": 0.81}, "s": 0.01, "n": 200}})["verdict"] == "reproduced"
    assert _row(s, {"06": {"acc": {"a": 0.70, "b": 0.81}, "s": 0.01, "n": 200}})["verdict"] == "not reproduced"


def test_device_and_real_data_rules():
    d = {"kind": "device", "value": Key("10", "p95"), "op": "<", "threshold": 4.0}
    assert _row(d, {"10": {"p95": 2.0, "device": "cpu"}})["verdict"] == "reproduced"
    assert _row(d, {"10": {"p95": 9.0, "device": "cpu"}})["verdict"] == "not testable offline"
    assert _row(d, {"10": {"p95": 9.0, "device": "cuda"}})["verdict"] == "not reproduced"
    rd = {"kind": "real_data", "dataset": "mosi", "value": Key("03", "mae"), "tolerance": 0.03}
    assert _row(rd, {"03": {"mae": 0.7, "dataset": "synth_mosi"}})["verdict"] == "not testable offline"
    claim = {"paper": "X", "claim": "c", "paper_value": [Paper("dast_gan_complete.csv", table="Table 3", dataset="mosi",
                                                                model="DAST-GAN", metric="mae")],
             "paper_text": "{0:.3f}", "source": "s", "where": ("03", "mae"), "rule": rd, "why": "w"}
    tables = report.load_paper_tables("data/paper_results")
    assert report.evaluate_claim(claim, {"03": {"mae": 0.71, "dataset": "mosi"}}, tables)["verdict"] == "reproduced"
    assert report.evaluate_claim(claim, {"03": {"mae": 0.80, "dataset": "mosi"}}, tables)["verdict"] == "not reproduced"


def test_missing_files_keys_and_bad_values_say_not_run():
    rule = {"kind": "less", "a": Key("03", "a"), "b": Key("03", "b")}
    row = _row(rule, {})
    assert row["verdict"] == "not run" and "03.json not found" in row["detail"]
    row = _row(rule, {"03": {"a": 1.0}})
    assert row["verdict"] == "not run" and "no b" in row["detail"]
    assert _row(rule, {"03": {"a": "x", "b": 1.0}})["verdict"] == "not run"
    assert _row({"kind": "less", "a": Key("03", "p", "w/o DAM"), "b": Key("03", "b")},
                {"03": {"p": [1, 2], "b": 1}})["verdict"] == "not run"


def test_report_with_no_metrics_is_all_not_run_or_offline(tmp_path):
    table = report.write_report(tmp_path / "report.md", metrics_dir=tmp_path / "nothing")
    assert set(table["verdict"]) <= {"not run", "not testable offline"}
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# Reproduction report") and text.count("\n| ") >= len(report.CLAIMS) + 1


def test_report_reads_metrics_files_and_skips_broken_ones(tmp_path):
    (tmp_path / "03.json").write_text(json.dumps({"mae_dast_gan_r0": 0.70, "mae_emt_dlfr_r0": 0.80,
                                                  "mae_dast_gan_r0_std": 0.01, "mae_emt_dlfr_r0_std": 0.01}))
    (tmp_path / "04.json").write_text("{ half written")
    table = report.build_report(tmp_path)
    first = table.iloc[0]
    assert first["verdict"] == "reproduced" and first["ours"] == "0.700 vs 0.800"
    assert (table["measured in"].str.startswith("04") & (table["verdict"] != "not run")).sum() == 0
