from ablate.data import synthetic
from ablate.data.synthetic import TaskConfig, oracle_reward


def test_oracle_rewards_coverage_and_charges_junk():
    p = "Q: w01 w02 w03 A:"
    assert oracle_reward(p, "w01 w02 w03") == 1.0
    assert abs(oracle_reward(p, "w01 w02") - 2 / 3) < 1e-9
    assert abs(oracle_reward(p, "well w01 w02 w03") - 0.9) < 1e-9
    assert abs(oracle_reward(p, "w01 w01 w02 w03 really") - 0.8) < 1e-9  # a repeat is junk too
    assert oracle_reward(p, "") == 0.0


def test_task_is_deterministic_and_splits_have_fields():
    a = synthetic.build_task(TaskConfig(n_train=50, n_eval=20, n_sft=30))
    b = synthetic.build_task(TaskConfig(n_train=50, n_eval=20, n_sft=30))
    assert a == b
    assert len(a["train"]) == 50 and len(a["eval"]) == 20 and len(a["sft"]) == 30
    assert all(r["chosen"] != r["rejected"] for r in a["train"] + a["eval"])
    assert synthetic.build_task(TaskConfig(n_train=50, n_eval=20, n_sft=30, seed=1)) != a


def test_length_bias_makes_chosen_longer_and_less_oracle_aligned():
    clean = synthetic.label_statistics(synthetic.build_task(TaskConfig(length_bias=0.0))["train"])
    biased = synthetic.label_statistics(synthetic.build_task(TaskConfig(length_bias=1.0))["train"])
    assert biased["chosen_longer"] > clean["chosen_longer"] + 0.1
    assert biased["oracle_agreement"] < clean["oracle_agreement"]
    assert clean["oracle_agreement"] > 0.7


def test_sft_demonstrations_do_not_depend_on_label_knobs():
    from ablate.trial.startpoint import SFT_TASK_FIELDS

    base = synthetic.build_task(TaskConfig(n_sft=50, n_train=20, n_eval=10))
    for change in ({"length_bias": 3.0}, {"temperature": 1.0}, {"n_train": 40}, {"n_eval": 30}):
        assert not set(change) & set(SFT_TASK_FIELDS)
        other = synthetic.build_task(TaskConfig(n_sft=50, n_train=20, n_eval=10).model_copy(update=change))
        assert other["sft"] == base["sft"], change
