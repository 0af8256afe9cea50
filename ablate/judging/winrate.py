"""Win rates against a baseline, raw and length-controlled as AlpacaEval 2 computes them (Ray-free,
torch-free: numpy and scikit-learn).

Raw: the share of prompts where the policy's answer beats the baseline's, ties counting half.

Length-controlled (AlpacaEval 2's GLM, ``alpaca_eval/metrics/glm_winrate.py``; docs/judging.md): a
logistic model without intercept of the soft preference p (1 = policy wins, 0.5 tie) on

    θ·1 + φ·tanh(Δlen / std(Δlen)) [+ ψ·difficulty(prompt)],   Δlen = len(policy) − len(baseline) in characters,

fitted with an L1 penalty (liblinear), its strength chosen by 5-fold cross-validation over prompts
(``GroupKFold``) on the soft log-loss, soft labels entered as two weighted rows (label 1 with weight p,
label 0 with weight 1 − p). The LC win rate is the mean fitted probability with Δlen set to 0.
Without the difficulty term this is AlpacaEval's ``length_controlled_minimal``; with it (a
difficulty per prompt, which a sweep estimates from its own trials: ``prompt_difficulty``) it is
``length_controlled_noreg``. AlpacaEval writes Δlen as baseline − policy; here φ > 0 means the judge
prefers longer answers (AlpacaEval's weight has the opposite sign; the LC win rate is the same).

Two standard errors: ``prediction_sem`` is what AlpacaEval reports (the standard error of the mean of
the per-prompt predictions; 0 for the minimal model, whose predictions are all σ(θ)), ``se`` the
delta-method error of the LC win rate from the fit's sandwich covariance (what the report shows).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

N_SPLITS = 5  # AlpacaEval's folds
RANDOM_STATE = 123  # AlpacaEval's liblinear seed


@dataclass(frozen=True)
class LCResult:
    win_rate: float  # raw, ties half, as a fraction
    lc_win_rate: float  # length-controlled, as a fraction
    se: float  # delta-method standard error of lc_win_rate (sandwich covariance)
    prediction_sem: float  # AlpacaEval's lc_standard_error / 100
    length_coef: float  # φ; > 0: the judge prefers longer answers
    coefs: dict[str, float] = field(default_factory=dict)
    n: int = 0


def preferences(policy_scores, baseline_scores) -> np.ndarray:
    """Per prompt: 1 where the policy's score is higher, 0 where lower, 0.5 on a tie."""
    a, b = np.asarray(policy_scores, float), np.asarray(baseline_scores, float)
    return np.where(a > b, 1.0, np.where(a < b, 0.0, 0.5))


def win_rate(prefs) -> float:
    p = np.asarray(prefs, float)
    return float(p.mean()) if len(p) else math.nan


def standardized_delta(policy_lengths, baseline_lengths) -> np.ndarray:
    """Δlen / std(Δlen) (sample std, as pandas); all zeros when the lengths never differ by a varying amount."""
    delta = np.asarray(policy_lengths, float) - np.asarray(baseline_lengths, float)
    std = delta.std(ddof=1) if len(delta) > 1 else 0.0
    return delta / std if std > 0 else np.zeros_like(delta)


def length_controlled(
    prefs, policy_lengths, baseline_lengths, difficulty=None, n_splits: int = N_SPLITS
) -> LCResult:
    """The LC win rate of one policy against the baseline (see the module doc); ``difficulty``: one
    value per prompt (None: the minimal model)."""
    p = np.clip(np.asarray(prefs, float), 0.0, 1.0)
    z = np.tanh(standardized_delta(policy_lengths, baseline_lengths))
    names = ["length", *(["difficulty"] if difficulty is not None else []), "baseline"]
    cols = [z, *([np.asarray(difficulty, float)] if difficulty is not None else []), np.ones_like(z)]
    x = np.column_stack(cols)
    beta = fit_soft_logistic(x, p, n_splits)
    x0 = x.copy()
    x0[:, 0] = 0.0  # no length difference
    q0 = _sigmoid(x0 @ beta)
    sem = float(q0.std(ddof=1) / math.sqrt(len(q0))) if len(q0) > 1 else math.nan
    return LCResult(
        win_rate=win_rate(p), lc_win_rate=float(q0.mean()), se=_delta_se(x, p, beta, x0), prediction_sem=sem,
        length_coef=float(beta[0]), coefs=dict(zip(names, map(float, beta), strict=True)), n=len(p),
    )  # fmt: skip


def fit_soft_logistic(x: np.ndarray, p: np.ndarray, n_splits: int = N_SPLITS) -> np.ndarray:
    """Coefficients of an L1 logistic regression without intercept on soft labels ``p``, its strength
    chosen among scikit-learn's 10 default values by grouped cross-validation on the soft log-loss.

    The same computation as ``LogisticRegressionCV(Cs=10, cv=GroupKFold, solver="liblinear", penalty="l1",
    fit_intercept=False, random_state=123)`` with the soft-log-loss scorer, to the bit (pinned by
    tests/test_winrate.py), but with liblinear called once per (fold, C) without scikit-learn's
    per-call validation: ~7 ms per policy instead of ~70 ms, which a report of thousands of trials needs."""
    with _without_liblinear_label_warning():
        return _fit_soft_logistic(x, p, n_splits)


def _fit_soft_logistic(x: np.ndarray, p: np.ndarray, n_splits: int) -> np.ndarray:
    n = len(p)
    rows = np.ascontiguousarray(np.vstack([x, x]), dtype=float)
    y = np.r_[np.ones(n), np.zeros(n)]
    weight = np.r_[p, 1.0 - p]
    if n < 2 or min(n_splits, n) < 2:
        return _liblinear_l1(rows, y, weight, 100.0, np.random.RandomState(RANDOM_STATE))
    target = np.r_[p, p]  # the soft label of every row (both copies of a prompt carry the same p)
    loss = np.zeros(len(CS))
    for train, test in _folds(n, min(n_splits, n)):
        # One generator per fold, drawn once per C in order: what scikit-learn's regularisation path does.
        rng = np.random.RandomState(RANDOM_STATE)
        xt, yt, wt = np.ascontiguousarray(rows[train]), y[train], weight[train]
        for k, c in enumerate(CS):
            beta = _liblinear_l1(xt, yt, wt, c, rng)
            loss[k] += _soft_log_loss(None, expit(rows[test] @ beta), target[test])
    best = CS[int(np.argmin(loss))]  # the first on a tie, as LogisticRegressionCV's argmax of the scores
    return _liblinear_l1(rows, y, weight, best, np.random.RandomState(RANDOM_STATE))


CS = np.logspace(-4, 4, 10)  # LogisticRegressionCV's default Cs=10
L1_LOGISTIC = 6  # liblinear's L1-regularised logistic regression (primal, newGLMNET)


def _liblinear_l1(x: np.ndarray, y: np.ndarray, weight: np.ndarray, c: float, rng) -> np.ndarray:
    """liblinear's L1 logistic fit without intercept, as ``sklearn.svm._base._fit_liblinear`` calls it
    (tolerance 1e-4, 100 iterations, unit class weights, seed drawn from ``rng``). Weak penalties on (nearly)
    separable judgments stop at the iteration cap, as in AlpacaEval (scikit-learn would warn)."""
    from sklearn.svm import _liblinear

    _liblinear.set_verbosity_wrap(0)  # liblinear prints every iteration unless told not to
    seed = rng.randint(np.iinfo("i").max)
    coef, _ = _liblinear.train_wrap(x, y, False, L1_LOGISTIC, 1e-4, -1.0, c, np.ones(2), 100, seed, 0.1, weight)
    return coef[0].copy()


@functools.lru_cache(maxsize=8)
def _folds(n: int, n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """GroupKFold over the 2n rows (a prompt's two rows in one fold); it depends on n alone, so it is kept."""
    from sklearn.model_selection import GroupKFold

    groups = np.r_[np.arange(n), np.arange(n)]
    return list(GroupKFold(n_splits=n_splits).split(np.zeros((2 * n, 1)), groups=groups))


LIBLINEAR_LABEL_WARNING = re.compile(rb"^WARNING: class label \d+ specified in weight is not found\n?$")


@contextlib.contextmanager
def _without_liblinear_label_warning() -> Iterator[None]:
    """liblinear (C) prints ``WARNING: class label 1 specified in weight is not found`` to the process's
    stderr when a cross-validation fold has no row of one label with weight > 0: a policy that lost (or
    won) every judgment of that fold. The fold is still fitted on the rows it has; nothing about the
    results is wrong, so the line is dropped and anything else liblinear printed is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            rest = [line for line in caught.read().splitlines(keepends=True)
                    if not LIBLINEAR_LABEL_WARNING.match(line)]  # fmt: skip
            if rest:
                sys.stderr.write(b"".join(rest).decode(errors="replace"))


def _soft_log_loss(y_true, y_prob, target) -> float:
    """Log-loss against the soft label of each row (``target``), not the duplicated 0/1 label."""
    q = np.clip(np.asarray(y_prob, float), 1e-15, 1 - 1e-15)
    if q.ndim == 2:
        q = q[:, 1]
    t = np.asarray(target, float)
    return float(-np.mean(t * np.log(q) + (1 - t) * np.log(1 - q)))


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -v))


def _delta_se(x: np.ndarray, p: np.ndarray, beta: np.ndarray, x0: np.ndarray) -> float:
    """Delta-method standard error of mean σ(x0·β), with the sandwich covariance H⁻¹ S H⁻¹ of β
    (H: the log-likelihood's Hessian, S: the sum of outer products of per-prompt scores), over the
    coefficients the L1 fit kept (zeroed ones are treated as fixed)."""
    keep = np.flatnonzero(beta != 0)
    if len(keep) == 0 or len(p) < 2:
        return 0.0 if len(p) >= 2 else math.nan
    xs, x0s = x[:, keep], x0[:, keep]
    q = _sigmoid(x @ beta)
    hessian = (xs * (q * (1 - q))[:, None]).T @ xs
    scores = xs * (p - q)[:, None]
    bread = np.linalg.pinv(hessian)
    cov = bread @ (scores.T @ scores) @ bread
    q0 = _sigmoid(x0 @ beta)
    grad = ((q0 * (1 - q0))[:, None] * x0s).mean(axis=0)
    return float(math.sqrt(max(grad @ cov @ grad, 0.0)))


def prompt_difficulty(prefs: np.ndarray, deltas: np.ndarray, sparse: bool = True) -> np.ndarray:
    """A difficulty per prompt from many policies judged on the same prompts against the same baseline:
    ``prefs`` and ``deltas`` (standardised length differences) are (policies × prompts). One logistic
    model with a win propensity and a length weight per policy and an effect per prompt (ridge-penalised,
    so the effects are identified and centred), fitted on the soft labels; a prompt's difficulty is
    minus its effect (higher: the policies win less often there), centred to mean 0. AlpacaEval
    estimated its instructions' difficulties across its leaderboard's models the same way.

    Each row has three non-zero entries, so the design is sparse (``sparse=False``: the dense matrix, kept
    for the test that pins one against the other): memory grows with policies × prompts, where the dense
    one grows with its square (9 GB at 1,000 policies × 128 prompts). Rows of weight 0 (the unused
    copy of a clear win or loss) add nothing to the objective and are left out."""
    from sklearn.linear_model import LogisticRegression

    prefs, deltas = np.asarray(prefs, float), np.asarray(deltas, float)
    t, n = prefs.shape
    x = _difficulty_design(np.tanh(deltas), sparse)
    p = prefs.reshape(-1)
    y = np.r_[np.ones(len(p)), np.zeros(len(p))]
    weight = np.r_[p, 1 - p]
    keep = np.flatnonzero(weight > 0)
    rows = x[np.r_[np.arange(len(p)), np.arange(len(p))][keep]]
    model = LogisticRegression(C=1.0, fit_intercept=False, max_iter=1000)
    model.fit(rows, y[keep], sample_weight=weight[keep])
    effect = model.coef_[0][2 * t :]
    return -(effect - effect.mean())


def _difficulty_design(tanh_deltas: np.ndarray, sparse: bool):
    """Rows (policy i, prompt j) in policy-major order; columns: policy i's propensity (1), its length
    weight (tanh Δ), prompt j's effect (1)."""
    import scipy.sparse

    t, n = tanh_deltas.shape
    policy, prompt = np.repeat(np.arange(t), n), np.tile(np.arange(n), t)
    rows = np.repeat(np.arange(t * n), 3)
    cols = np.column_stack([policy, t + policy, 2 * t + prompt]).reshape(-1)
    values = np.column_stack([np.ones(t * n), tanh_deltas.reshape(-1), np.ones(t * n)]).reshape(-1)
    x = scipy.sparse.csr_matrix((values, (rows, cols)), shape=(t * n, 2 * t + n))
    return x if sparse else x.toarray()
