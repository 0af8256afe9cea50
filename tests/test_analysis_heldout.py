"""The trial's per-response file (heldout.json) agrees with the trial's own held-out metrics."""

from __future__ import annotations

import json

import pytest

from ablate.trial.runner import HELDOUT_FILE, run_trial
from analysis import stats
from tests.conftest import make_trial


@pytest.mark.parametrize("method", ["simpo", "dpo"])
def test_heldout_file_matches_the_trial_metrics(small_spec, start, method):
    saved: dict[str, bytes] = {}
    final = run_trial(make_trial(small_spec, start, method), lambda _: None, saved.__setitem__)
    records = json.loads(saved[HELDOUT_FILE])
    pairs = records["pairs"]
    assert len(pairs["chosen_reward"]) == small_spec.data.task.n_eval
    cells = stats.contingency([pairs])
    assert cells["reward_accuracy"] == pytest.approx(final["reward_accuracy"])
    assert cells["agreement"] == pytest.approx(final["reward_likelihood_agreement"])
    _, _, rho = stats.length_logp([pairs])
    assert rho == pytest.approx(final["length_logp_spearman"], abs=1e-3)  # avg log-probs rounded to 5 digits
    gens = records["generations"]
    assert len(gens["length"]) == small_spec.evaluation.num_prompts
    assert sum(gens["length"]) / len(gens["length"]) == pytest.approx(final["gen_length"])
    assert len(gens["oracle_reward"]) == len(gens["sft_oracle_reward"]) == len(gens["length"])
