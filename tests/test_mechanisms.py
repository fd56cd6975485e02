"""The designed regimes of DAST-GAN's modules (SynthMSA 'texture' and 'synchrony') and
mmsa.mechanisms' paired study, on tiny data."""
import numpy as np
import torch
import pytest

from mmsa import experiment, mechanisms, probes
from mmsa.data.synthetic import SYNC_DISTRACTORS, SYNC_WIDTH, synthetic_splits


@pytest.fixture(scope="module")
def texture(tmp_path_factory):
    return synthetic_splits("mosi", sizes=(240, 8, 8), seed=5, root=tmp_path_factory.mktemp("tex"),
                            lengths=(24, 60, 60), reliability="texture", verbose=False)["train"]


@pytest.fixture(scope="module")
def synchrony(tmp_path_factory):
    return synthetic_splits("mosi", sizes=(120, 8, 8), seed=5, root=tmp_path_factory.mktemp("sync"),
                            lengths=(24, 150, 200), reliability="synchrony", verbose=False)["train"]


def test_roughness_by_hand():
    x = np.zeros((2, 4, 1))
    x[0, :, 0] = [1, 1, 1, 1]          # constant: no steps
    x[1, :, 0] = [1, -1, 1, -1]        # alternating: steps of 2, frames of 1 -> 4
    assert probes.roughness(x, np.array([4, 4])).tolist() == [0.0, 4.0]
    assert probes.roughness(3 * x, np.array([4, 4])).tolist() == [0.0, 4.0]   # loudness cancels


def test_texture_reliability_is_visible_as_texture_not_loudness(texture):
    from scipy.stats import spearmanr

    r = texture.truth["reliability"]
    assert 0.05 <= r.min() and r.max() <= 1.0
    assert abs(spearmanr(r[:, 0], texture.regression_labels).statistic) < 0.2     # independent of the label
    for m, j in (("audio", 1), ("vision", 2)):
        x, n = getattr(texture, m), getattr(texture, f"{m}_lengths")
        loud = (x.astype(np.float64) ** 2).sum((1, 2)) / n
        assert abs(spearmanr(loud, r[:, j]).statistic) < 0.2
        assert spearmanr(probes.roughness(x, n), r[:, j]).statistic < -0.6       # rough = unreliable


def test_texture_modalities_say_the_truth_in_proportion_to_their_reliability(texture):
    r, y, ya = texture.truth["reliability"][:, 1], texture.regression_labels, texture.unimodal["A"]
    good, bad = r > 0.7, r < 0.3
    assert np.corrcoef(y[good], ya[good])[0, 1] > np.corrcoef(y[bad], ya[bad])[0, 1] + 0.3


def test_synchrony_true_burst_is_shared_by_audio_and_vision(synchrony):
    win = synchrony.truth["cue_window"]
    na, nv = synchrony.audio_lengths, synchrony.vision_lengths
    assert na.max() <= 150 and nv.max() <= 200 and na.min() >= 75 and nv.min() >= 100
    assert np.allclose(na / 150, nv / 200, atol=0.01)                       # one clip, two frame rates
    assert np.allclose(win[:, 1, 0] / na, win[:, 2, 0] / nv, atol=0.02)     # the same moment
    assert np.allclose((win[:, 1, 1] - win[:, 1, 0]) / na, SYNC_WIDTH, atol=0.01)
    assert np.allclose(synchrony.regression_labels, synchrony.unimodal["A"])


def test_synchrony_has_decoy_bursts_away_from_the_true_one(synchrony):
    """Each stream has 1 + SYNC_DISTRACTORS bursts: the frames' valence energy peaks outside the
    true window too."""
    x, n, win = synchrony.audio, synchrony.audio_lengths, synchrony.truth["cue_window"][:, 1]
    energy = (x.astype(np.float64) ** 2).sum(-1)
    outside = []
    for i in range(len(x)):
        e = energy[i, :n[i]].copy()
        e[win[i, 0]:win[i, 1]] = 0
        outside.append(np.sort(e)[-SYNC_DISTRACTORS * 2:].mean() / np.median(energy[i, :n[i]]))
    assert np.median(outside) > 3      # strong bursts remain once the true window is removed


def test_regime_protocols_keep_the_base_and_set_story_lengths_seeds():
    base = experiment.Protocol(sizes=(60, 20, 20), epochs=3)
    p = mechanisms.protocol("sta", base, (1, 2, 3, 4, 5))
    assert (p.reliability, tuple(p.lengths), p.seeds, p.sizes, p.epochs) == ("synchrony", (32, 150, 200), (1, 2, 3, 4, 5), (60, 20, 20), 3)
    assert mechanisms.protocol("gan", base, (1, 2)).lengths == base.lengths          # the chapters' runs
    assert mechanisms.protocol("dam", base, (1,), lengths=(16, 12, 12)).lengths == (16, 12, 12)


def test_paired_gain_sign_and_verdict_on_hand_made_predictions():
    class Fake:
        def __init__(self, err):
            self.err = err

        def predict(self, loader, transform=None, keep_extras=()):
            return {"pred": self.err, "label": np.zeros_like(self.err)}

    class Split:
        pass

    import mmsa.mechanisms as mech

    rng = np.random.default_rng(0)
    good = [Fake(rng.normal(0, 0.5, 50)) for _ in range(3)]
    bad = [Fake(g.err * 2.0) for g in good]
    runs = {**{("with", s): g for s, g in zip((1, 2, 3), good)}, **{("without", s): b for s, b in zip((1, 2, 3), bad)}}
    orig = mech.make_loader
    mech.make_loader = lambda split, bs: None
    try:
        d = mech.paired_gain(runs, "without", "with", (1, 2, 3), Split(), n_boot=500)
    finally:
        mech.make_loader = orig
    assert d["diff"] > 0 and d["verdict"] == "reproduced" and d["mde"] > 0
    assert d["mae_without"] == pytest.approx(2 * d["mae_with"])


def test_tiny_study_writes_every_mech_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = experiment.Protocol(sizes=(32, 16, 16), epochs=1, patience=1, lengths=(16, 12, 12), data_dir=str(tmp_path / "synth"))
    st = mechanisms.study(base, seeds=(1, 2), workers=1, progress=False, fixes=False,
                          lengths={"dam": (16, 12, 12), "sta": (16, 24, 32)})
    keys = {"mech_seeds", "mech_dam_spearman", "mech_dam_gain_ci_low", "mech_dam_variant", "mech_sta_audio_frames",
            "mech_sta_vision_frames", "mech_sta_gain_ci_low", "mech_sta_occlusion_vs_backbone", "mech_sta_variant",
            "mech_gan_gain_ci_low", "mech_gan_gap_closed_seeds", "mech_gan_variant"}
    assert keys <= set(st.metrics)
    assert st.metrics["mech_seeds"] == 2 and st.metrics["mech_sta_audio_frames"] == 24
    assert st.metrics["mech_dam_gain_verdict"] in ("reproduced", "contradicted", "inconclusive")
    assert st.metrics["mech_dam_variant"] == "faithful" or not st.metrics["mech_dam_faithful_meets_target"]
    table = mechanisms.verdict_table(st)
    assert list(table["regime"]) == ["dam", "sta", "gan"] and table["MDE"].ge(0).all()


def test_input_texture_by_hand_ignores_loudness_missing_frames_and_text():
    import torch

    from mmsa.fusion.dam import input_texture
    from mmsa.types import Batch

    a = torch.tensor([[[1.0], [1.0], [1.0], [1.0]], [[1.0], [-1.0], [1.0], [-1.0]]])   # smooth, alternating
    v = 5 * a                                                                            # louder: same texture
    ids = torch.tensor([[101, 2000, 102, 0]] * 2)
    b = Batch(audio=a, vision=v, text_ids=ids, text_mask=(ids > 0).long(), label=torch.zeros(2),
              audio_lengths=torch.tensor([4, 4]), vision_lengths=torch.tensor([4, 4]), text_lengths=torch.tensor([3, 3]))
    assert torch.allclose(input_texture(b), torch.tensor([[0.0, 0.0, 0.0], [0.0, 4.0, 4.0]]))
    gap = a.clone()
    gap[1, 2] = 0.0                     # a dropped frame: its two steps are not counted
    b.audio = gap
    assert torch.allclose(input_texture(b)[1, 1], torch.tensor(4.0))


def test_dam_texture_intervention_builds_and_every_dam_parameter_gets_a_gradient():
    import torch

    from test_dast_gan import make_batch, tiny

    torch.manual_seed(0)
    model = tiny(use_gan=False, dam_texture=True)
    assert model.dam.mlp[0].in_features == model.dam.norm.normalized_shape[0] + 2
    model.train()
    out = model(make_batch())
    out.pred.float().sum().backward()
    assert all(p.grad is not None for p in model.dam.mlp.parameters())


def test_dam_reading_names_the_cause_the_two_measurements_support():
    f = {"meets_target": False, "spearman": 0.15, "gain_verdict": "inconclusive", "gain": 0.003}
    moved = {"meets_target": False, "spearman": 0.33, "gain_verdict": "inconclusive", "gain": 0.038,
             "gain_ci_low": -0.001, "gain_ci_high": 0.079, "gain_mde": 0.058}
    flipped = {"meets_target": True, "spearman": 0.7, "gain_verdict": "reproduced"}
    still = {"meets_target": False, "spearman": 0.17, "gain_verdict": "inconclusive"}
    line = mechanisms.dam_reading({"faithful": f, "fix": moved})
    assert "head also reads" in line and "+0.003 to +0.038" in line and "still contains 0" in line
    assert "flips the outcome" in mechanisms.dam_reading({"faithful": f, "fix": flipped})
    assert "hardly changes" in mechanisms.dam_reading({"faithful": f, "fix": still})
    assert "meets its target" in mechanisms.dam_reading({"faithful": {**flipped}})


def test_dam_regime_declares_four_interventions_each_against_fixed_weights():
    rg = mechanisms.REGIMES["dam"]
    roles = mechanisms.fix_roles(rg)
    assert list(roles) == ["fix", "fix2", "fix3", "fix4"]
    assert roles["fix"].flags == {"use_gan": False, "dam_texture": True}
    assert roles["fix2"].flags == {"use_gan": False, "dam_texture": True, "dam_supervision": 0.1}
    assert roles["fix3"].flags == {**roles["fix2"].flags, "dam_target": "truth"}   # one change against fix2
    assert roles["fix4"].flags == {**roles["fix3"].flags, "dam_supervision": 1.0}  # one change against fix3
    assert all(f.without is None for f in roles.values())          # all compared with "fixed 1/3"
    labels = {lbl for lbl, *_ in mechanisms.jobs(rg, (1, 2), {k: v for f in rg.fixes for k, v in f.jobs().items()})}
    assert labels == {"DAM", "fixed 1/3", "DAM + texture", "DAM + texture + reliability term",
                      "DAM + texture + true-reliability term", "DAM + texture + true-reliability term ×10"}
    gan = mechanisms.fix_roles(mechanisms.REGIMES["gan"])
    assert gan["fix"].jobs() == {"GAN, no attraction": ("dast_gan", {"w_att": 0.0}),
                                 "w/o GAN, no attraction": ("dast_gan", {"use_gan": False, "w_att": 0.0})}
    # the discriminator's lr changes nothing in a model without GAN: compared with the regime's own "w/o GAN"
    assert gan["fix3"].jobs() == {"GAN, discriminator lr 1e-3": ("dast_gan", {"gan_lr": 1e-3})}
    assert gan["fix3"].without is None and not gan["fix3"].protocol
    # the build intervention changes only the discriminator (absent in "w/o GAN"): the same comparison
    assert gan["fix4"].jobs() == {"GAN, discriminator without dropout, lr 1e-3":
                                  ("dast_gan", {"disc_dropout": 0.0, "gan_lr": 1e-3})}
    assert gan["fix4"].without is None and not gan["fix4"].protocol
    assert gan["fix5"].jobs() == {"GAN, two-time-scale discriminator (lr 4e-3)": ("dast_gan", {"gan_lr": 4e-3})}
    assert gan["fix5"].without is None        # one change against fix3 (gan_lr 1e-3 -> 4e-3)
    assert gan["fix6"].jobs() == {"GAN, discriminator without spectral norm": ("dast_gan", {"disc_spectral_norm": False})}
    assert gan["fix6"].without is None


def test_dam_reading_of_the_second_intervention_separates_signal_from_use():
    f = {"meets_target": False, "spearman": 0.26, "gain_verdict": "inconclusive", "gain": 0.003}
    x = {"meets_target": False, "spearman": 0.41, "gain_verdict": "inconclusive", "gain": 0.038,
         "gain_ci_low": -0.001, "gain_ci_high": 0.079, "gain_mde": 0.058}
    y = {"meets_target": True, "spearman": 0.7, "gain": 0.06, "gain_ci_low": 0.02, "gain_ci_high": 0.1, "gain_mde": 0.05}
    assert "outcome flips" in mechanisms.dam_reading({"faithful": f, "fix": x, "fix2": y})
    y_right_no_gain = dict(y, meets_target=False, gain=0.01, gain_ci_low=-0.03)
    assert "matter little" in mechanisms.dam_reading({"faithful": f, "fix": x, "fix2": y_right_no_gain})
    y_weak = dict(y_right_no_gain, spearman=0.45)
    line = mechanisms.dam_reading({"faithful": f, "fix": x, "fix2": y_weak})
    assert "not the limit" in line and "0.45" in line


def test_dam_reading_of_the_oracle_target():
    f = {"meets_target": False, "spearman": 0.26, "gain_verdict": "inconclusive", "gain": 0.003}
    x = {"meets_target": False, "spearman": 0.41, "gain_verdict": "inconclusive", "gain": 0.038,
         "gain_ci_low": -0.001, "gain_ci_high": 0.079, "gain_mde": 0.058}
    y = {"meets_target": False, "spearman": 0.39, "gain_verdict": "inconclusive", "gain": 0.03,
         "gain_ci_low": -0.009, "gain_ci_high": 0.066, "gain_mde": 0.054}
    z = {"meets_target": True, "spearman": 0.8, "gain_verdict": "reproduced", "gain": 0.08,
         "gain_ci_low": 0.03, "gain_ci_high": 0.12, "gain_mde": 0.05}
    res = {"faithful": f, "fix": x, "fix2": y, "fix3": z}
    line = mechanisms.dam_reading(res, 0.13)
    assert "weak proxy" in line and "oracle" in line and "outcome flips" in line and "+0.080 [+0.030, +0.120]" in line
    assert "matter little" in mechanisms.dam_reading({**res, "fix3": dict(z, meets_target=False, gain_verdict="inconclusive",
                                                                           gain_ci_low=-0.01)}, 0.13)
    z_low = dict(z, meets_target=False, spearman=0.44, gain_verdict="inconclusive", gain_ci_low=-0.01)
    assert "a larger weight separates" in mechanisms.dam_reading({**res, "fix3": z_low})
    w = dict(z, spearman=0.7)
    line = mechanisms.dam_reading({**res, "fix3": z_low, "fix4": w})
    assert "At weight 1 the same term flips the outcome" in line and "separates" not in line
    w_no_gain = dict(w, meets_target=False, gain_verdict="inconclusive", gain_ci_low=-0.02)
    assert "route" in mechanisms.dam_reading({**res, "fix3": z_low, "fix4": w_no_gain})
    assert "0.44 → 0.58" in mechanisms.dam_reading({**res, "fix3": z_low, "fix4": dict(w_no_gain, spearman=0.58)})
    assert "not the limit" in mechanisms.dam_reading({**res, "fix3": z_low, "fix4": dict(w_no_gain, spearman=0.47)})
    assert "oracle" not in mechanisms.dam_reading({"faithful": f, "fix": x, "fix2": y}, 0.13)


def test_alpha_swap_replaces_dam_weights_at_test_time_only(tmp_path):
    """Own α reproduces predict(); α = 1/3 and the true-reliability weights change the prediction
    of a DAM model whose weights are far from uniform; afterwards DAM uses its own scorer again."""
    import torch

    data = synthetic_splits("mosi", sizes=(24, 8, 16), seed=3, root=tmp_path, lengths=(16, 20, 20),
                            reliability="texture", verbose=False)
    p = experiment.Protocol(sizes=(24, 8, 16), lengths=(16, 20, 20), reliability="texture", epochs=1, data_dir=str(tmp_path))
    t = experiment.fit("dast_gan", p, seed=1, data=data, root=str(tmp_path / "runs"), use_gan=False)
    with torch.no_grad():
        t.model.dam.mlp[2].bias.zero_()
        t.model.dam.mlp[2].weight.mul_(50.0)          # sharpen the learned scores: α far from 1/3
    test = data["test"]
    res = t.predict(mechanisms.make_loader(test, 64))
    own = np.abs(res["pred"].ravel() - res["label"].ravel())
    assert np.allclose(mechanisms.alpha_swap(t, test), own, atol=1e-5)
    uniform = mechanisms.alpha_swap(t, test, "uniform")
    assert not np.allclose(uniform, own, atol=1e-4)
    assert "weights" not in t.model.dam.__dict__                      # the scorer is back
    assert np.allclose(mechanisms.alpha_swap(t, test), own, atol=1e-5)
    r = mechanisms.dam_alpha_interventions([t], test, n_boot=50)
    assert r["mae_own"] == pytest.approx(own.mean(), abs=1e-5)
    assert r["mae_uniform"] == pytest.approx(uniform.mean(), abs=1e-5)
    for k in ("uniform_minus_own", "own_minus_oracle"):
        assert r[k]["boot_low"] <= r[k]["diff"] <= r[k]["boot_high"]
    assert r["uniform_minus_own"]["diff"] == pytest.approx(uniform.mean() - own.mean(), abs=1e-5)


def test_gan_intervention_is_compared_with_its_own_ablation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = experiment.Protocol(sizes=(32, 16, 16), epochs=1, patience=1, lengths=(16, 12, 12), data_dir=str(tmp_path / "synth"))
    st = mechanisms.study(base, seeds=(1, 2), regimes=("gan",), workers=1, progress=False)
    assert {lbl for lbl, _ in st.runs["gan"]} == {"GAN", "w/o GAN", "GAN, no attraction", "w/o GAN, no attraction",
                                                  "GAN, trained at 30-90 %", "w/o GAN, trained at 30-90 %",
                                                  "GAN, discriminator lr 1e-3", "GAN, discriminator without dropout, lr 1e-3",
                                                  "GAN, two-time-scale discriminator (lr 4e-3)",
                                                  "GAN, discriminator without spectral norm"}
    from torch.nn.utils import parametrize
    d6 = st.runs["gan"][("GAN, discriminator without spectral norm", 1)].model.discriminator
    assert not any(parametrize.is_parametrized(m) for m in d6.modules())
    assert any(parametrize.is_parametrized(m) for m in st.runs["gan"][("GAN", 1)].model.discriminator.modules())
    d4 = st.runs["gan"][("GAN, discriminator without dropout, lr 1e-3", 1)].model
    assert d4.cfg.disc_dropout == 0.0 and d4.cfg.gan_lr == 1e-3
    assert not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in d4.discriminator.modules())
    assert st.results["gan"]["fix4"]["compared_with"] == "w/o GAN"
    assert st.runs["gan"][("GAN, discriminator lr 1e-3", 1)].model.cfg.gan_lr == 1e-3
    assert st.results["gan"]["fix3"]["compared_with"] == "w/o GAN"
    acc = st.results["gan"]["faithful"]["d_train_acc"]     # 1 epoch inside the warm-up: λ = 0, no GAN epoch
    assert np.isnan(acc) and np.isnan(st.results["gan"]["fix"]["d_train_acc"])
    # the same flags as "GAN", another training protocol: another run, compared with its own ablation
    a, b = (st.runs["gan"][(lbl, 1)].model.state_dict() for lbl in ("GAN", "GAN, trained at 30-90 %"))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert st.results["gan"]["fix2"]["compared_with"] == "w/o GAN, trained at 30-90 %"
    assert "mech_gan_fix2_gain_ci_low" in st.metrics
    fix = st.results["gan"]["fix"]
    assert fix["compared_with"] == "w/o GAN, no attraction" and st.results["gan"]["faithful"]["compared_with"] == "w/o GAN"
    assert st.runs["gan"][("GAN, no attraction", 1)].model.cfg.w_att == 0.0
    assert {"mech_gan_fix_gain_ci_low", "mech_gan_fix_gap_closed_seeds"} <= set(st.metrics)
    text = mechanisms.gan_reading(st.results["gan"], 2)
    assert "attraction" in text and "of 2 seeds" in text
    faithful = st.results["gan"]["faithful"]
    won = fix["meets_target"] and not faithful["meets_target"]
    assert st.metrics["mech_gan_variant"] == ("w_att=0" if won else "faithful")


def test_gan_reading_claims_overlap_only_from_a_decided_gain():
    f = {"meets_target": False, "gain": -0.006, "gain_ci_low": -0.03, "gain_ci_high": 0.016, "gain_mde": 0.034,
         "gap_closed_seeds": 2}
    x = dict(f, gain=-0.025, gain_ci_low=-0.066, gain_ci_high=0.014, gain_verdict="inconclusive", gap_closed_seeds=3)
    text = mechanisms.gan_reading({"faithful": f, "fix": x}, 5)
    assert "not the cause" in text and "overlap" not in text       # 3 of 5 seeds instead of 2 is no evidence
    x.update(gain=0.05, gain_ci_low=0.01, gain_ci_high=0.09, gain_verdict="reproduced")
    assert "overlap" in mechanisms.gan_reading({"faithful": f, "fix": x}, 5)
    x.update(gain=-0.037, gain_ci_low=-0.076, gain_ci_high=-0.001, gain_verdict="contradicted")
    assert "makes the prediction worse" in mechanisms.gan_reading({"faithful": f, "fix": x}, 5)


def test_gan_reading_of_the_discriminator_intervention():
    f = {"meets_target": False, "gain": -0.006, "gain_ci_low": -0.03, "gain_ci_high": 0.016, "gain_mde": 0.034,
         "gap_closed_seeds": 2, "d_train_acc": 0.55}
    x = dict(f, gain_verdict="inconclusive", gap_closed_seeds=4)
    y = dict(f, gain_verdict="inconclusive", gap_closed_seeds=4)
    z = dict(f, gain=0.001, gain_ci_low=-0.02, gain_ci_high=0.02, gain_verdict="inconclusive", gap_closed_seeds=3,
             d_train_acc=0.68)
    text = mechanisms.gan_reading({"faithful": f, "fix": x, "fix2": y}, 5)
    assert "hypothesis" in text                               # the cause is still untested
    text = mechanisms.gan_reading({"faithful": f, "fix": x, "fix2": y, "fix3": z}, 5)
    assert "0.55 → 0.68" in text and "does not help" in text and "hypothesis" not in text
    assert "does not separate the views any better" in mechanisms.gan_reading({"faithful": f, "fix": x, "fix2": y,
                                                          "fix3": dict(z, d_train_acc=0.56)}, 5)
    won = dict(z, meets_target=True, gain=0.05, gain_ci_low=0.01, gain_verdict="reproduced", gap_closed_seeds=5)
    assert "outcome flips" in mechanisms.gan_reading({"faithful": f, "fix": x, "fix2": y, "fix3": won}, 5)


def test_discriminator_accuracy_averages_the_gan_epochs_only():
    from types import SimpleNamespace

    a = SimpleNamespace(history=[{"d_acc": 0.9, "adv_weight": 0.0}, {"d_acc": 0.6, "adv_weight": 0.05},
                                 {"d_acc": 0.7, "adv_weight": 0.1}])
    b = SimpleNamespace(history=[{"d_acc": 0.5, "adv_weight": 0.1}])
    assert mechanisms.discriminator_accuracy([a, b]) == pytest.approx((0.65 + 0.5) / 2)
    assert np.isnan(mechanisms.discriminator_accuracy([SimpleNamespace(history=[{"valid_mae": 1.0}])]))


def _fake_gan_run(shift: float, disc_weight: float, n: int = 120, dim: int = 8):
    """A stand-in for a trained GAN run: its complete view's features have +shift on the first
    dimension, the incomplete view's -shift (plus unit noise); its discriminator reads
    disc_weight × that dimension."""
    from types import SimpleNamespace

    def predict(loader, transform=None, keep_extras=()):
        rng = np.random.default_rng(loader + (0 if transform is None else 1))
        f = rng.normal(size=(n, dim)).astype(np.float32)
        f[:, 0] += shift if transform is None else -shift
        return {"extras": {"global_context": f[:, :6].reshape(n, 3, 2), "s": f[:, 6:]}}

    disc = torch.nn.Linear(dim, 1)
    with torch.no_grad():
        disc.weight.zero_(); disc.bias.zero_(); disc.weight[0, 0] = disc_weight
    cfg = SimpleNamespace(disc_hidden=(16, 8), disc_dropout=0.3)
    return SimpleNamespace(predict=predict, model=SimpleNamespace(discriminator=disc, cfg=cfg), device="cpu")


def test_view_separability_tells_a_weak_discriminator_from_inseparable_views(monkeypatch):
    splits = {"fit": 10, "eval": 20}                      # the fake loader is the split's rng seed
    monkeypatch.setattr(mechanisms, "make_loader", lambda split, batch: split)
    weak = mechanisms.view_separability([_fake_gan_run(2.0, 0.0)] * 2, splits["fit"], splits["eval"], rates=(0.3,))
    r = weak[0.3]
    assert r["disc"] == pytest.approx(0.5)                # logit 0 everywhere: every complete clip is called incomplete
    assert r["logistic"] > 0.9 and r["mlp"] > 0.9 and len(r["mlp_per_seed"]) == 2
    assert mechanisms.separability_reading(weak)[0] == "b"
    good = mechanisms.view_separability([_fake_gan_run(2.0, 1.0)], splits["fit"], splits["eval"], rates=(0.3,))
    assert good[0.3]["disc"] > 0.9 and mechanisms.separability_reading(good)[0] == "c"
    only = mechanisms.view_separability([_fake_gan_run(2.0, 0.0)], splits["fit"], splits["eval"], rates=(0.3,), probes=False)
    assert set(only[0.3]) == {"disc", "disc_per_seed"}
    same = mechanisms.view_separability([_fake_gan_run(0.0, 1.0)], splits["fit"], splits["eval"], rates=(0.3,))
    assert max(same[0.3]["logistic"], same[0.3]["mlp"]) < 0.65 and mechanisms.separability_reading(same)[0] == "a"


def test_gan_reading_of_the_declared_discriminator_build_intervention():
    f = {"meets_target": False, "gain": -0.006, "gain_ci_low": -0.03, "gain_ci_high": 0.016, "gain_mde": 0.034,
         "gap_closed_seeds": 2, "d_train_acc": 0.62}
    x = dict(f, gain_verdict="inconclusive", gap_closed_seeds=3)
    z = dict(f, gain=0.05, gain_ci_low=-0.008, gain_ci_high=0.117, gain_verdict="inconclusive", gap_closed_seeds=4)
    res = {"faithful": f, "fix": x, "fix2": x, "fix3": z}
    sep = {0.3: {"disc": 0.65, "logistic": 0.92, "mlp": 0.91}, 0.8: {"disc": 0.75, "logistic": 0.99, "mlp": 0.99}}
    assert "is not measured here" in mechanisms.gan_reading(res, 5)
    text = mechanisms.gan_reading(res, 5, {"faithful": sep})
    assert "0.92" in text and "0.65" in text and "reads little of it" in text and "not measured" not in text
    w = dict(z, gain=0.0, gain_ci_low=-0.03, gain_ci_high=0.03, gain_verdict="inconclusive", gap_closed_seeds=3)
    learned = {0.3: dict(sep[0.3], disc=0.90), 0.8: dict(sep[0.8], disc=0.97)}
    text = mechanisms.gan_reading({**res, "fix4": w}, 5, {"faithful": sep, "fix4": learned})
    assert "0.65 → 0.90" in text and "does not pay" in text
    text = mechanisms.gan_reading({**res, "fix4": w}, 5, {"faithful": sep, "fix4": sep})
    assert "still does not read" in text
    won = dict(w, meets_target=True, gain=0.06, gain_ci_low=0.02, gain_verdict="reproduced", gap_closed_seeds=5)
    assert "outcome flips" in mechanisms.gan_reading({**res, "fix4": won}, 5, {"faithful": sep, "fix4": learned})
    # the two-time-scale candidate, read after the fresh-discriminator measurement
    fresh = {"book": {"acc": 0.79}, "converged": {"acc": 0.82}}
    v = dict(w, gain=0.01, gain_ci_low=-0.03, gain_ci_high=0.05, gap_closed_seeds=3)
    text = mechanisms.gan_reading({**res, "fix4": w, "fix5": v}, 5, {"faithful": sep, "fix4": sep, "fix5": sep}, fresh)
    assert "does not follow the views either" in text and "0.65 on the validation clips" in text
    assert "Untested" in text                                # no spectral-norm measurement given
    no_sn = {**fresh, "converged, no spectral norm": {"acc": 0.83}}
    text = mechanisms.gan_reading({**res, "fix4": w, "fix5": v}, 5, {"faithful": sep, "fix4": sep, "fix5": sep}, no_sn)
    assert "Nor is spectral norm the build's bound" in text and "Untested" not in text
    text = mechanisms.gan_reading({**res, "fix4": w, "fix5": v}, 5, {"faithful": sep, "fix4": sep, "fix5": learned}, fresh)
    assert "it follows the views; yet" in text
    assert "fix5" not in text and "four times" not in mechanisms.gan_reading({**res, "fix4": w, "fix5": v}, 5,
                                                                              {"faithful": sep})
    # the discriminator without spectral norm, read after the spectral-norm measurement
    u = dict(w, gain=0.0, gain_ci_low=-0.03, gain_ci_high=0.03, gap_closed_seeds=2)
    six = {**res, "fix4": w, "fix5": v, "fix6": u}
    text = mechanisms.gan_reading(six, 5, {"faithful": sep, "fix4": sep, "fix5": sep, "fix6": sep}, no_sn)
    assert "the game still wins" in text
    text = mechanisms.gan_reading(six, 5, {"faithful": sep, "fix4": sep, "fix5": sep, "fix6": learned}, no_sn)
    assert "now follows the views; yet" in text
    paid = dict(u, gain=0.055, gain_ci_low=0.002, gain_ci_high=0.123, gain_verdict="reproduced", gap_closed_seeds=4)
    low = {0.3: dict(sep[0.3], disc=0.57)}
    text = mechanisms.gan_reading({**six, "fix6": paid}, 5, {"faithful": sep, "fix6": low}, no_sn)
    assert "+0.055 [+0.002, +0.123]" in text and "is missed" in text and "weak evidence" in text
    assert "does not come from a discriminator that reads the views better" in text and "game still wins" not in text
    won6 = dict(u, meets_target=True, gain=0.06, gain_ci_low=0.02, gain_verdict="reproduced", gap_closed_seeds=5)
    assert "spectral norm kept the discriminator" in mechanisms.gan_reading({**six, "fix6": won6}, 5, {"faithful": sep}, no_sn)
    sn_bound = {**fresh, "converged, no spectral norm": {"acc": 0.93}}
    text = mechanisms.gan_reading(six, 5, {"faithful": sep}, sn_bound)
    assert "The last candidate tests" in text and "Untested" not in text
    # another branch of the rule: no discriminator intervention is read
    inseparable = {0.3: {"disc": 0.6, "logistic": 0.62, "mlp": 0.6}}
    text = mechanisms.gan_reading({**res, "fix4": won}, 5, {"faithful": inseparable})
    assert "bounded by its data" in text and "outcome flips" not in text


def test_fresh_discriminator_of_the_papers_build_reads_frozen_views(monkeypatch):
    monkeypatch.setattr(mechanisms, "make_loader", lambda split, batch: split)
    budgets = {"book": (1e-4, 20), "converged": (1e-2, 400), "no sn": (1e-2, 400, False)}
    fr = mechanisms.fresh_discriminator([_fake_gan_run(2.0, 0.0)], 10, 20, budgets=budgets)
    assert fr["converged"]["acc"] > 0.9 and fr["no sn"]["acc"] > 0.9 and len(fr["book"]["acc_per_seed"]) == 1
    same = mechanisms.fresh_discriminator([_fake_gan_run(0.0, 0.0)], 10, 20, budgets=budgets)
    assert abs(same["converged"]["acc"] - 0.5) < 0.15          # nothing to read
    again = mechanisms.fresh_discriminator([_fake_gan_run(2.0, 0.0)], 10, 20, budgets=budgets)
    assert again["converged"]["acc"] == pytest.approx(fr["converged"]["acc"])   # seeded


def test_fresh_reading_follows_the_declared_rule():
    sep = {0.3: {"disc": 0.65, "logistic": 0.92, "mlp": 0.91}}
    branch, text = mechanisms.fresh_reading({"book": {"acc": 0.79}, "converged": {"acc": 0.82}}, sep)
    assert branch == "build" and "0.82" in text and "game costs more than the build" in text
    _, text = mechanisms.fresh_reading({"book": {"acc": 0.79}, "converged": {"acc": 0.82},
                                        "converged, no spectral norm": {"acc": 0.90}}, sep)
    assert "spectral norm is what bounds the build" in text
    _, text = mechanisms.fresh_reading({"book": {"acc": 0.79}, "converged": {"acc": 0.82},
                                        "converged, no spectral norm": {"acc": 0.83}}, sep)
    assert "spectral norm is not what bounds the build" in text
    branch, text = mechanisms.fresh_reading({"book": {"acc": 0.70}, "converged": {"acc": 0.80}}, sep)
    assert branch == "build" and "game costs more" not in text and "would not be enough" in text
    assert mechanisms.fresh_reading({"book": {"acc": 0.9}, "converged": {"acc": 0.9}}, sep)[0] == "game"
    assert mechanisms.fresh_reading({"book": {"acc": 0.7}, "converged": {"acc": 0.9}},
                                    {0.3: dict(sep[0.3], disc=0.85)})[0] == "build reads, game unclear"
