"""mmsa.report: every claim of data/claims/paper_claims.yaml is well formed and its paper number
resolves; each kind of rule gives the verdict of mmsa.verdict on hand-made metrics (reproduced,
contradicted, inconclusive with and without a saved interval, exploratory, sanity, a selection on
validation numbers, keys with '/'); missing metrics never crash; the Markdown report is written."""
import json

import pytest

from mmsa import claims, report, verdict


@pytest.fixture(scope="module")
def tables():
    return report.load_paper_tables()


def test_every_claim_is_well_formed_and_its_paper_number_resolves(tables):
    assert claims.validate(report.CLAIMS, tables) == []


def test_claims_cover_the_three_papers():
    papers = {c["paper"].split(" (")[0] for c in report.CLAIMS}
    assert papers == {"DAST-GAN", "UFEN+MTFN", "CM-STA+CG+TCMFI"}
    assert len(report.CLAIMS) >= 30


def test_the_rules_the_issue_names(tables):
    """Sanity checks are counted apart; selections read validation numbers; STA is compared with
    the backbone without STA; no claim is decided by a seed-std band."""
    by_claim = {c["claim"]: c["rule"] for c in report.CLAIMS}
    assert by_claim["DAM's missing compensation removes an absent modality (weight → 0)"]["class"] == "sanity"
    assert by_claim["The model has 2,497,666 parameters"]["class"] == "sanity"
    assert by_claim["A learning rate of 5e-3 is best"]["field"] == "valid_mae"
    assert by_claim["Two UFEN layers are best"]["field"] == "valid_mae"
    assert by_claim["Without multi-task learning the performance drops"]["one_seed"]
    assert by_claim["The model is insensitive to the learning rate"]["class"] == "exploratory"
    sta = by_claim["STA attends to the informative time steps"]
    assert sta["kind"] == "paired" and any("EMT-DLFR" in label for label, _ in sta["show"])
    assert all("std" not in r or r["kind"] == "paired" for r in by_claim.values())


def test_paper_value_reads_the_published_row(tables):
    assert claims.paper_value(tables, {"file": "dast_gan_complete.csv", "table": "Table 3", "dataset": "mosi",
                                       "model": "DAST-GAN", "metric": "mae"}) == pytest.approx(0.698)
    with pytest.raises(KeyError, match="rows match"):
        claims.paper_value(tables, {"file": "dast_gan_complete.csv", "metric": "mae"})   # ambiguous


def _row(rule, metrics, tables=None):
    claim = {"paper": "X (y)", "claim": "c", "paper_value": [], "paper_text": "qualitative", "source": "s",
             "where": ["08", "k"], "rule": rule, "why": "w"}
    return report.evaluate_claim(claim, metrics, tables or {})


PAIRED = {"kind": "paired", "sign": 1, "diff": ["08", "paired", "w/o DAM", "complete", "diff"],
          "low": ["08", "paired", "w/o DAM", "complete", "boot_low"],
          "high": ["08", "paired", "w/o DAM", "complete", "boot_high"]}


def _paired(d, lo, hi):
    return {"08": {"paired": {"w/o DAM": {"complete": {"diff": d, "boot_low": lo, "boot_high": hi}}}}}


def test_paired_interval_decides_with_its_mde():
    row = _row(PAIRED, _paired(0.02, 0.01, 0.03))
    assert row["verdict"] == "reproduced"
    assert f"minimum detectable effect {verdict.mde(0.01, 0.03):.3f}" in row["detail"]
    assert _row(PAIRED, _paired(-0.02, -0.03, -0.01))["verdict"] == "contradicted"
    row = _row(PAIRED, _paired(0.0, -0.01, 0.01))
    assert row["verdict"] == "inconclusive" and "minimum detectable effect" in row["detail"]
    assert _row({**PAIRED, "sign": -1}, _paired(-0.02, -0.03, -0.01))["verdict"] == "reproduced"


def test_paired_without_a_saved_interval_is_inconclusive_and_names_the_key():
    rule = {**PAIRED, "show": [["DAST-GAN", ["08", "a"]], ["EMT-DLFR", ["08", "b"]]],
            "std": [["DAST-GAN", ["08", "sa"]]]}
    row = _row(rule, {"08": {"a": 0.70, "b": 0.80, "sa": 0.01}})   # a large gap, but no interval
    assert row["verdict"] == "inconclusive" and row["ours"] == "0.700 vs 0.800"
    assert "no paired interval saved" in row["detail"] and "paired → w/o DAM" in row["detail"]
    assert "seed std DAST-GAN 0.010" in row["detail"]


def test_one_seed_is_exploratory_even_with_an_interval():
    row = _row({**PAIRED, "one_seed": "one seed per row"}, _paired(0.02, 0.01, 0.03))
    assert row["verdict"] == "exploratory" and "one seed per row" in row["detail"]


def test_measure_classes_sanity_exploratory_and_threshold_with_its_baseline():
    sanity = {"kind": "measure", "class": "sanity", "value": ["03", "alpha"], "op": "<", "threshold": 0.05,
              "because": "log(ρ + ε)"}
    row = _row(sanity, {"03": {"alpha": 1e-9}})
    assert row["verdict"] == "sanity" and "passes" in row["detail"] and "log(ρ + ε)" in row["detail"]
    assert "FAILS" in _row(sanity, {"03": {"alpha": 0.2}})["detail"]
    spread = {"kind": "measure", "class": "exploratory", "test": "spread", "table": ["06", "lr_acc"], "threshold": 0.02,
              "scale": 100, "digits": 1, "because": "one seed per rate", "context": [["seed std", ["06", "sd"]]]}
    row = _row(spread, {"06": {"lr_acc": {"0.001": 0.80, "0.01": 0.81}, "sd": 0.03}})
    assert row["verdict"] == "exploratory" and "meets" in row["detail"] and "seed std 3.0" in row["detail"]
    ratio = {"kind": "measure", "value": ["03", "r", "DAST-GAN"], "op": ">=", "threshold": 2.0, "digits": 2,
             "baseline": [["EMT-DLFR (no STA)", ["03", "r", "EMT-DLFR"]]]}
    row = _row(ratio, {"03": {"r": {"DAST-GAN": 3.88, "EMT-DLFR": 4.53}}})
    assert row["verdict"] == "inconclusive" and "no interval saved" in row["detail"]
    assert "EMT-DLFR (no STA) scores 4.53 on the same test" in row["detail"]
    with_interval = {**ratio, "low": ["03", "lo"], "high": ["03", "hi"]}
    assert _row(with_interval, {"03": {"r": {"DAST-GAN": 3.9, "EMT-DLFR": 4.5}, "lo": 2.5, "hi": 5.0}})["verdict"] == "reproduced"
    assert _row(with_interval, {"03": {"r": {"DAST-GAN": 1.5, "EMT-DLFR": 4.5}, "lo": 1.2, "hi": 1.8}})["verdict"] == "contradicted"
    assert _row(with_interval, {"03": {"r": {"DAST-GAN": 2.1, "EMT-DLFR": 4.5}, "lo": 1.5, "hi": 2.7}})["verdict"] == "inconclusive"


def test_measure_order_and_all_positive():
    o = {"kind": "measure", "test": "order", "values": [["a", ["07", "a"]], ["b", ["07", "b"]]]}
    assert "meets" in _row(o, {"07": {"a": 1, "b": 2}})["detail"]
    assert "misses" in _row(o, {"07": {"a": 2, "b": 1}})["detail"]
    p = {"kind": "measure", "test": "all_positive", "values": [["random", ["07", "g", "random"]]]}
    assert _row(p, {"07": {"g": {"random": 0.1}}})["verdict"] == "inconclusive"


def test_selection_uses_validation_numbers_or_says_it_cannot():
    rule = {"kind": "selection", "table": ["05", "studies", "lr"], "field": "valid_mae", "test_field": "mae",
            "expect": "lr = 0.005"}
    test_only = {"lr = 0.001": {"mae": 0.80}, "lr = 0.005": {"mae": 0.70}}
    row = _row(rule, {"05": {"studies": {"lr": test_only}}})
    assert row["verdict"] == "not testable from the saved metrics"
    assert "lr = 0.001 has no 'valid_mae'" in row["detail"] and "test mae" in row["ours"]
    both = {"lr = 0.001": {"mae": 0.80, "valid_mae": 0.60}, "lr = 0.005": {"mae": 0.70, "valid_mae": 0.65}}
    row = _row(rule, {"05": {"studies": {"lr": both}}})        # best on test, not on validation
    assert row["verdict"] == "exploratory" and "best on validation: lr = 0.001" in row["detail"]
    assert "differs from" in row["detail"]


def test_device_and_real_data_rules(tables):
    d = {"kind": "device", "value": ["10", "p95"], "op": "<", "threshold": 4.0}
    assert _row(d, {"10": {"p95": 2.0, "device": "cpu"}})["verdict"] == "exploratory"
    assert _row(d, {"10": {"p95": 9.0, "device": "cpu"}})["verdict"] == "not testable offline"
    assert "misses" in _row(d, {"10": {"p95": 9.0, "device": "cuda"}})["detail"]
    rd = {"kind": "real_data", "dataset": "mosi", "value": ["03", "mae"], "tolerance": 0.03}
    assert _row(rd, {"03": {"mae": 0.7, "dataset": "synth_mosi"}})["verdict"] == "not testable offline"
    claim = {"paper": "X", "claim": "c", "paper_text": "{0:.3f}", "source": "s", "where": ["03", "mae"], "rule": rd,
             "why": "w", "paper_value": [{"file": "dast_gan_complete.csv", "table": "Table 3", "dataset": "mosi",
                                          "model": "DAST-GAN", "metric": "mae"}]}
    row = report.evaluate_claim(claim, {"03": {"mae": 0.71, "dataset": "mosi"}}, tables)
    assert row["verdict"] == "inconclusive" and "within ±0.03" in row["detail"]


def test_missing_files_keys_and_bad_values_say_not_run():
    row = _row(PAIRED, {})
    assert row["verdict"] == "not run" and "08.json not found" in row["detail"]
    row = _row({**PAIRED, "show": [["a", ["08", "a"]]]}, {"08": {"b": 1.0}})
    assert row["verdict"] == "not run" and "no a" in row["detail"]
    assert _row({"kind": "measure", "value": ["08", "x"], "op": ">", "threshold": 0}, {"08": {"x": "text"}})["verdict"] == "not run"
    assert _row({"kind": "measure", "value": ["08", "w/o DAM"], "op": ">", "threshold": 0}, {"08": {"w/o DAM": [1, 2]}})["verdict"] == "not run"


def test_report_with_no_metrics_is_all_not_run_or_offline(tmp_path):
    table = report.write_report(tmp_path / "report.md", metrics_dir=tmp_path / "nothing")
    assert set(table["verdict"]) <= {"not run", "not testable offline"}
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# Reproduction report") and text.count("\n| ") >= len(report.CLAIMS) + 1


def test_report_reads_metrics_files_and_skips_broken_ones(tmp_path):
    (tmp_path / "08.json").write_text(json.dumps({"paired": {v: {"complete": {"diff": 0.02, "boot_low": 0.01, "boot_high": 0.03}}
                                                             for v in ("w/o DAM", "w/o STA", "w/o GAN")}}))
    (tmp_path / "03.json").write_text(json.dumps({"mae_dast_gan_r0": 0.70, "mae_emt_dlfr_r0": 0.80, "alpha_dropped_max": 0.0,
                                                  "mae_dast_gan_r0_std": 0.01, "mae_emt_dlfr_r0_std": 0.01}))
    (tmp_path / "04.json").write_text("{ half written")
    table = report.build_report(tmp_path)
    first = table.iloc[0]
    assert first["verdict"] == "inconclusive" and first["ours"] == "0.700 vs 0.800"
    assert "no paired interval saved" in first["detail"]
    ablations = table[table["measured in"].str.startswith("08 · paired")]
    assert len(ablations) == 3 and set(ablations["verdict"]) == {"reproduced"}
    assert (table["measured in"].str.startswith("04") & (table["verdict"] != "not run")).sum() == 0
    assert table.loc[table["claim"].str.startswith("DAM's missing compensation"), "verdict"].item() == "sanity"
    text = report.to_markdown(table, tmp_path)
    assert "reproduced 3" in text and "sanity 1" in text and "counted apart" in text
