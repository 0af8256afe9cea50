"""Win rates and AlpacaEval 2's length-controlled win rate (ablate.judging.winrate): hand-checked small cases, and
the same judgments through alpaca_eval's own fitting code (its `glm_winrate` module), to 1e-3.

alpaca_eval reads a file from the hub for the instruction difficulties (and, in its default variant, the
"gamed" regularisation rows); here that one download is pointed at a local CSV holding the difficulties
the test gives, so its featurisation, fit and prediction run unchanged on the test's data."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from ablate.judging import winrate


def test_preferences_count_ties_half():
    prefs = winrate.preferences([2.0, 1.0, 0.5, 3.0], [1.0, 1.0, 0.7, 3.0])
    assert prefs.tolist() == [1.0, 0.5, 0.0, 0.5]
    assert winrate.win_rate(prefs) == 0.5


def test_standardized_delta_uses_the_sample_std():
    z = winrate.standardized_delta([3, 5, 10], [1, 1, 1])  # deltas 2, 4, 9: sample std sqrt(13)
    assert z.tolist() == pytest.approx([2 / math.sqrt(13), 4 / math.sqrt(13), 9 / math.sqrt(13)])
    assert winrate.standardized_delta([4, 4], [1, 1]).tolist() == [0.0, 0.0]  # no spread: no length signal


def test_all_ties_give_one_half():
    lc = winrate.length_controlled([0.5] * 20, list(range(20)), [10] * 20)
    assert lc.win_rate == 0.5 and lc.lc_win_rate == pytest.approx(0.5, abs=1e-9)


def test_equal_lengths_leave_the_win_rate_alone():
    # No length difference anywhere: the model is σ(θ) alone, every prediction the same (AlpacaEval's
    # standard error of the predictions is 0), and the fit recovers the raw win rate.
    prefs = [1.0] * 30 + [0.0] * 10
    lc = winrate.length_controlled(prefs, [50] * 40, [50] * 40)
    assert lc.win_rate == 0.75
    assert lc.lc_win_rate == pytest.approx(0.75, abs=0.01)
    assert lc.prediction_sem == pytest.approx(0.0, abs=1e-12)
    assert lc.coefs["length"] == 0.0
    assert 0 < lc.se < 0.15


def test_a_judge_that_only_likes_length_is_corrected_to_one_half():
    # The judge's preference is a function of the length difference alone, P = σ(2·tanh(Δ/std)), and the
    # policy is usually longer: its raw win rate is high, its length-controlled one ~0.5, φ ~ +2.
    rng = np.random.default_rng(0)
    base = rng.integers(100, 200, 400)
    ours = base + rng.normal(60, 60, 400).astype(int)
    z = winrate.standardized_delta(ours, base)
    prefs = 1 / (1 + np.exp(-2 * np.tanh(z)))
    lc = winrate.length_controlled(prefs, ours, base)
    assert lc.win_rate > 0.65
    assert lc.lc_win_rate == pytest.approx(0.5, abs=0.01)
    assert lc.length_coef == pytest.approx(2.0, rel=0.05)


def test_prompt_difficulty_finds_the_hard_prompts():
    rng = np.random.default_rng(1)
    hard = np.r_[np.ones(20), np.zeros(20)]  # the policies lose the first 20 prompts far more often
    logits = rng.normal(0, 0.3, (6, 1)) - 2.5 * hard + 1.0
    prefs = (rng.random((6, 40)) < 1 / (1 + np.exp(-logits))).astype(float)
    d = winrate.prompt_difficulty(prefs, np.zeros((6, 40)))
    assert abs(d.mean()) < 1e-9
    assert d[:20].mean() > d[20:].mean() + 1.0


def test_sparse_difficulty_design_gives_the_dense_answer():
    # The sweep's difficulty model on a sparse design (memory ~ policies × prompts) against the dense
    # matrix it replaces (memory ~ its square), ties included so that both copies of some rows count.
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 0.5, (12, 1)) - rng.normal(0, 1.5, (1, 60)) + 0.3
    prefs = (rng.random((12, 60)) < 1 / (1 + np.exp(-logits))).astype(float)
    prefs[rng.random((12, 60)) < 0.1] = 0.5
    deltas = rng.normal(0, 1, (12, 60))
    sparse = winrate.prompt_difficulty(prefs, deltas)
    dense = winrate.prompt_difficulty(prefs, deltas, sparse=False)
    assert np.abs(sparse - dense).max() < 1e-8
    assert sparse.std() > 0.5  # the prompts' effects were found, not a flat answer


@pytest.mark.parametrize("n", [5, 40, 201])
def test_fast_cv_fit_is_logistic_regression_cv(n):
    # fit_soft_logistic calls liblinear directly (no per-call validation): the coefficients must be those
    # of scikit-learn's LogisticRegressionCV with the same folds, seed, penalty and scorer, bit for bit.
    import sklearn
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    rng = np.random.default_rng(n)
    z, d = np.tanh(rng.normal(0, 1, n)), rng.normal(0, 1, n)
    p = (rng.random(n) < 1 / (1 + np.exp(-(0.3 + z - d)))).astype(float)
    p[rng.random(n) < 0.1] = 0.5
    x = np.column_stack([z, d, np.ones(n)])
    rows, y, groups = np.vstack([x, x]), np.r_[np.ones(n), np.zeros(n)], np.r_[np.arange(n), np.arange(n)]
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence at liblinear's cap; `penalty` deprecation
        scorer = make_scorer(winrate._soft_log_loss, response_method="predict_proba", greater_is_better=False)
        model = LogisticRegressionCV(cv=GroupKFold(n_splits=5), scoring=scorer.set_score_request(target=True),
                                     solver="liblinear", fit_intercept=False, random_state=winrate.RANDOM_STATE,
                                     penalty="l1").set_fit_request(sample_weight=True)  # fmt: skip
        model.fit(rows, y, sample_weight=np.r_[p, 1 - p], groups=groups, target=np.r_[p, p])
    assert np.array_equal(winrate.fit_soft_logistic(x, p), model.coef_[0])


# --------------------------------------------------------------------------------------------------
# Against alpaca_eval's own code
# --------------------------------------------------------------------------------------------------


def _judgments(seed: int, n: int = 160):
    """AlpacaEval-style annotations of one model against a baseline: preferences 1 (baseline), 2 (model)
    or 1.5 (draw), outputs whose lengths drive them, a difficulty per instruction."""
    rng = np.random.default_rng(seed)
    base_len = rng.integers(50, 400, n)
    model_len = np.maximum(base_len + rng.integers(-150, 300, n), 1)
    difficulty = rng.normal(size=n)
    logit = 0.2 + 1.0 * np.tanh((model_len - base_len) / np.std(model_len - base_len)) - 0.7 * difficulty
    pref = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), 2.0, 1.0)
    pref[rng.random(n) < 0.1] = 1.5
    df = pd.DataFrame({
        "instruction": [f"instruction {i}" for i in range(n)], "index": np.arange(n), "preference": pref,
        "output_1": ["b" * int(k) for k in base_len], "output_2": ["m" * int(k) for k in model_len],
        "generator_1": "baseline", "generator_2": "model", "annotator": "test",
    })  # fmt: skip
    return df, pref - 1.0, model_len, base_len, difficulty


@pytest.fixture
def glm(tmp_path, monkeypatch):
    """alpaca_eval's glm_winrate with its hub file replaced by a local one of the test's difficulties."""
    from alpaca_eval.metrics import glm_winrate

    def use(difficulty: np.ndarray) -> None:
        path = tmp_path / "df_gamed.csv"
        n = len(difficulty)
        pd.DataFrame({"model": "none", "index": np.arange(n), "instruction_difficulty": difficulty}).to_csv(path, index=False)
        monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **_: str(path))

    return glm_winrate, use


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minimal_lc_matches_alpaca_eval(glm, seed):
    module, use = glm
    df, prefs, model_len, base_len, difficulty = _judgments(seed)
    use(difficulty)  # not used by the minimal variant
    theirs = module.get_length_controlled_winrate(df, glm_name="length_controlled_minimal", save_weights_dir=None,
                                                 is_warn_extreme_changes=False)  # fmt: skip
    ours = winrate.length_controlled(prefs, model_len, base_len)
    assert ours.win_rate == pytest.approx(theirs["win_rate"] / 100, abs=1e-9)
    assert ours.lc_win_rate == pytest.approx(theirs["length_controlled_winrate"] / 100, abs=1e-3)
    assert ours.prediction_sem == pytest.approx(theirs["lc_standard_error"] / 100, abs=1e-3)


@pytest.mark.parametrize("seed", [3, 4])
def test_lc_with_difficulty_matches_alpaca_eval(glm, seed):
    module, use = glm
    df, prefs, model_len, base_len, difficulty = _judgments(seed)
    use(difficulty)
    theirs = module.get_length_controlled_winrate(df, glm_name="length_controlled_noreg", save_weights_dir=None,
                                                 is_warn_extreme_changes=False)  # fmt: skip
    ours = winrate.length_controlled(prefs, model_len, base_len, difficulty=difficulty)
    assert ours.lc_win_rate == pytest.approx(theirs["length_controlled_winrate"] / 100, abs=1e-3)
    assert ours.prediction_sem == pytest.approx(theirs["lc_standard_error"] / 100, abs=1e-3)
    # The length weights agree up to AlpacaEval's sign convention (it writes Δlen = baseline − model).
    tr, _, _ = module._get_featurized_data(df, module.GLM_INFO["length_controlled_noreg"]["formula"], None)
    fit = module.fit_LogisticRegressionCV(tr, "preference", is_ytrue_proba=True)
    assert ours.length_coef == pytest.approx(-fit.coef_[0][0], abs=1e-3)


def test_sweep_difficulty_through_alpaca_eval(glm):
    # The sweep variant: difficulties estimated from several policies' judgments, then one policy's LC with
    # them, by both implementations.
    module, use = glm
    runs = [_judgments(s, n=120) for s in range(5, 9)]
    prefs = np.vstack([r[1] for r in runs])
    deltas = np.vstack([winrate.standardized_delta(r[2], r[3]) for r in runs])
    difficulty = winrate.prompt_difficulty(prefs, deltas)
    df, p, model_len, base_len, _ = runs[0]
    use(difficulty)
    theirs = module.get_length_controlled_winrate(df, glm_name="length_controlled_noreg", save_weights_dir=None,
                                                 is_warn_extreme_changes=False)  # fmt: skip
    ours = winrate.length_controlled(p, model_len, base_len, difficulty=difficulty)
    assert ours.lc_win_rate == pytest.approx(theirs["length_controlled_winrate"] / 100, abs=1e-3)
