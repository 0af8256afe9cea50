"""Tests for ablate.losses: hand-computed values, gradients, numerics, special cases, errors."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from ablate.losses import LOSSES, METHOD_NAMES, needs_reference, preference_loss, validate_hparams

# --------------------------------------------------------------------------------------------------
# Data. Chosen and rejected lengths differ in every pair.
# --------------------------------------------------------------------------------------------------

# Regular batch: rho_w = [1, 2, 1.5], rho_l = [-0.5, 1, -2] (KTO batch mean 0.5 > 0),
# IPO h = [1.5, 1, 3.5]; RRHF hinge active in pair 1 only, SLiC-HF hinge in pair 1 only.
BATCH = {
    "cw": [-10.0, -24.0, -6.0],
    "cl": [-12.0, -15.0, -20.0],
    "lw": [5, 8, 3],
    "ll": [4, 10, 5],
    "rcw": [-11.0, -26.0, -7.5],
    "rcl": [-11.5, -16.0, -18.0],
}
# "Hard" batch: the rejected response beats the chosen one on every score, so every hinge and
# sigmoid is active (non-saturated) and every gradient is non-zero.
HARD = {
    "cw": [-20.0, -30.0, -12.0],
    "cl": [-8.0, -10.0, -5.0],
    "lw": [5, 8, 3],
    "ll": [4, 10, 5],
    "rcw": [-18.0, -29.0, -10.0],
    "rcl": [-9.0, -11.0, -6.0],
}
# Very negative log-probs, large log-ratios and zero lengths (clamped to 1).
EXTREME = {
    "cw": [-1e4, -1e4, -5e3],
    "cl": [-1e4, -2e3, -1e4],
    "lw": [1, 0, 7],
    "ll": [3, 2, 0],
    "rcw": [-50.0, -1e4, -20.0],
    "rcl": [-30.0, -40.0, -1e4],
}

REFERENCE_METHODS = ("dpo", "ipo", "kto", "rdpo")


def tensors(data: dict, dtype: torch.dtype = torch.float32, requires_grad: bool = False) -> dict:
    out = {}
    for key, values in data.items():
        if key in ("lw", "ll"):
            out[key] = torch.tensor(values, dtype=torch.long)
        else:
            out[key] = torch.tensor(values, dtype=torch.float32).to(dtype).requires_grad_(requires_grad)
    return out


def call(method: str, t: dict, **hparams):
    """The loss as a trial computes it: hyperparameters resolved first (as at expansion), then the loss."""
    resolved = validate_hparams(method, hparams)
    return preference_loss(method, t["cw"], t["cl"], t["lw"], t["ll"], t["rcw"], t["rcl"], **resolved)


# --------------------------------------------------------------------------------------------------
# Expected values in plain Python (independent of the implementation under test)
# --------------------------------------------------------------------------------------------------


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def log_odds(avg: float) -> float:
    return avg - math.log(1.0 - math.exp(avg))


def rows(d: dict):
    return zip(d["cw"], d["cl"], d["lw"], d["ll"], d["rcw"], d["rcl"], strict=True)


def expected(method: str, d: dict, hp: dict) -> tuple[list, list, list]:
    """(losses, chosen_rewards, rejected_rewards) computed with math only."""
    losses, rw, rl = [], [], []
    if method == "kto":
        beta = hp.get("beta", 0.1)
        ratios = [cw - rcw for cw, _, _, _, rcw, _ in rows(d)] + [cl - rcl for _, cl, _, _, _, rcl in rows(d)]
        z = beta * max(0.0, sum(ratios) / len(ratios))
    for cw, cl, lw, ll, rcw, rcl in rows(d):
        aw, al = cw / max(lw, 1), cl / max(ll, 1)
        if method == "simpo":
            beta = hp.get("beta", 2.0)
            gamma = hp["gamma_beta_ratio"] * beta if "gamma_beta_ratio" in hp else hp.get("gamma", 1.0)
            ln = hp.get("length_normalize", True)
            r_w, r_l = (beta * aw, beta * al) if ln else (beta * cw, beta * cl)
            loss = -logsig(r_w - r_l - gamma) + hp.get("sft_weight", 0.0) * -aw
        elif method == "dpo":
            beta = hp.get("beta", 0.1)
            r_w, r_l = beta * (cw - rcw), beta * (cl - rcl)
            loss = -logsig(r_w - r_l)
        elif method == "ipo":
            tau = hp.get("tau", 0.1)
            r_w, r_l = cw - rcw, cl - rcl
            loss = (r_w - r_l - 1 / (2 * tau)) ** 2
        elif method == "cpo":
            beta = hp.get("beta", 0.1)
            r_w, r_l = beta * cw, beta * cl
            loss = -logsig(r_w - r_l) + hp.get("sft_weight", 1.0) * -aw
        elif method == "kto":
            r_w, r_l = beta * (cw - rcw), beta * (cl - rcl)
            loss = hp.get("desirable_weight", 1.0) * (1 - sig(r_w - z)) + hp.get(
                "undesirable_weight", 1.0
            ) * (1 - sig(z - r_l))
        elif method == "orpo":
            r_w, r_l = log_odds(aw), log_odds(al)
            loss = -aw - hp.get("or_weight", 0.1) * logsig(r_w - r_l)
        elif method == "rdpo":
            beta, alpha = hp.get("beta", 0.1), hp.get("alpha", 0.05)
            r_w, r_l = beta * (cw - rcw), beta * (cl - rcl)
            loss = -logsig(r_w - r_l + alpha * max(lw, 1) - alpha * max(ll, 1))
        elif method == "rrhf":
            r_w, r_l = aw, al
            loss = max(0.0, -aw + al) + hp.get("sft_weight", 1.0) * -aw
        elif method == "slic_hf":
            r_w, r_l = cw, cl
            loss = max(0.0, hp.get("delta", 1.0) - cw + cl) + hp.get("sft_weight", 0.1) * -aw
        elif method == "sft":
            r_w, r_l = aw, al
            loss = -aw
        else:
            raise AssertionError(method)
        losses.append(loss)
        rw.append(r_w)
        rl.append(r_l)
    return losses, rw, rl


CASES = [
    ("simpo", {}),
    ("simpo", {"beta": 2.5, "gamma": 0.3}),
    ("simpo", {"beta": 2.5, "gamma_beta_ratio": 0.8}),
    ("simpo", {"beta": 0.05, "length_normalize": False}),
    ("simpo", {"gamma": 0.0, "sft_weight": 0.5}),
    ("dpo", {}),
    ("dpo", {"beta": 0.5}),
    ("ipo", {}),
    ("ipo", {"tau": 1.0}),
    ("cpo", {}),
    ("cpo", {"beta": 0.05, "sft_weight": 0.0}),
    ("kto", {}),
    ("kto", {"beta": 0.5, "desirable_weight": 1.5, "undesirable_weight": 0.5}),
    ("orpo", {}),
    ("orpo", {"or_weight": 1.0}),
    ("rdpo", {}),
    ("rdpo", {"beta": 0.05, "alpha": 0.5}),
    ("rrhf", {}),
    ("rrhf", {"sft_weight": 0.0}),
    ("slic_hf", {}),
    ("slic_hf", {"delta": 0.5, "sft_weight": 1.0}),
    ("sft", {}),
]
CASE_IDS = [f"{m}-{'-'.join(f'{k}={v}' for k, v in hp.items()) or 'defaults'}" for m, hp in CASES]


def test_cases_cover_every_method():
    assert {m for m, _ in CASES} == set(METHOD_NAMES)


# --------------------------------------------------------------------------------------------------
# (1) Hand-computed values
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [BATCH, HARD], ids=["batch", "hard"])
@pytest.mark.parametrize(("method", "hp"), CASES, ids=CASE_IDS)
def test_matches_hand_computed_values(method, hp, data):
    losses, chosen_rewards, rejected_rewards = call(method, tensors(data), **hp)
    exp_losses, exp_rw, exp_rl = expected(method, data, hp)
    for got in (losses, chosen_rewards, rejected_rewards):
        assert got.dtype == torch.float32
        assert got.shape == (3,)
    assert losses.tolist() == pytest.approx(exp_losses, rel=1e-5, abs=1e-6)
    assert chosen_rewards.tolist() == pytest.approx(exp_rw, rel=1e-5, abs=1e-6)
    assert rejected_rewards.tolist() == pytest.approx(exp_rl, rel=1e-5, abs=1e-6)


def test_kto_reference_point_is_clamped_at_zero():
    data = dict(BATCH, rcw=[x + 5 for x in BATCH["rcw"]], rcl=[x + 5 for x in BATCH["rcl"]])
    losses, _, _ = call("kto", tensors(data), beta=0.5)
    # All log-ratios drop by 5: batch mean is -4.5 < 0, so z_ref = 0.
    exp = [
        (1 - sig(0.5 * (cw - rcw))) + (1 - sig(-0.5 * (cl - rcl))) for cw, cl, _, _, rcw, rcl in rows(data)
    ]
    assert losses.tolist() == pytest.approx(exp, rel=1e-5)


def test_kto_reference_point_gets_no_gradient():
    t = tensors(BATCH, requires_grad=True)
    call("kto", t, beta=0.5)[0].sum().backward()
    z = 0.5 * 0.5  # beta * batch mean of the six log-ratios (0.5)
    exp_grad = [
        -0.5 * sig(0.5 * (cw - rcw) - z) * (1 - sig(0.5 * (cw - rcw) - z)) for cw, *_, rcw, _ in rows(BATCH)
    ]
    # Without the detach, z_ref's own dependence on chosen_logps would add beta/(2B) * (...) here.
    assert t["cw"].grad.tolist() == pytest.approx(exp_grad, rel=1e-5)


# --------------------------------------------------------------------------------------------------
# (2) Gradient directions
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "hp"), CASES, ids=CASE_IDS)
def test_gradient_direction(method, hp):
    t = tensors(HARD, requires_grad=True)
    call(method, t, **hp)[0].sum().backward()
    assert torch.all(t["cw"].grad < 0), t["cw"].grad  # raising log π(y_w|x) lowers the loss
    if method == "sft":  # the rejected response is not in the graph at all
        assert t["cl"].grad is None
    else:
        assert torch.all(t["cl"].grad > 0), t["cl"].grad  # raising log π(y_l|x) raises it


def test_rewards_are_detached():
    t = tensors(BATCH, requires_grad=True)
    for method in METHOD_NAMES:
        _, chosen_rewards, rejected_rewards = call(method, t)
        assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad


# --------------------------------------------------------------------------------------------------
# (3, 4) Numerics: very negative log-probs, bfloat16 inputs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("data", [BATCH, EXTREME], ids=["batch", "extreme"])
@pytest.mark.parametrize(("method", "hp"), CASES, ids=CASE_IDS)
def test_finite_losses_and_gradients(method, hp, data, dtype):
    t = tensors(data, dtype=dtype, requires_grad=True)
    losses, chosen_rewards, rejected_rewards = call(method, t, **hp)
    assert losses.dtype == chosen_rewards.dtype == rejected_rewards.dtype == torch.float32
    for out in (losses, chosen_rewards, rejected_rewards):
        assert torch.isfinite(out).all(), out
    losses.sum().backward()
    for key in ("cw", "cl") if method != "sft" else ("cw",):
        assert t[key].grad.dtype == dtype
        assert torch.isfinite(t[key].grad).all(), t[key].grad


@pytest.mark.parametrize(("method", "hp"), CASES, ids=CASE_IDS)
def test_bf16_inputs_are_computed_in_float32(method, hp):
    bf16 = tensors(BATCH, dtype=torch.bfloat16)
    rounded = {k: (v.float() if v.is_floating_point() else v) for k, v in bf16.items()}
    for got, want in zip(call(method, bf16, **hp), call(method, rounded, **hp), strict=True):
        assert torch.equal(got, want)


def test_int_and_float_lengths_agree_and_zero_lengths_clamp_to_one():
    t = tensors(BATCH)
    as_float = dict(t, lw=t["lw"].float(), ll=t["ll"].float())
    zero = dict(t, lw=torch.tensor([0, 1, 0]), ll=torch.tensor([1, 0, 0]))
    one = dict(t, lw=torch.tensor([1, 1, 1]), ll=torch.tensor([1, 1, 1]))
    for method in METHOD_NAMES:
        for got, want in zip(call(method, t), call(method, as_float), strict=True):
            assert torch.equal(got, want)
        for got, want in zip(call(method, zero), call(method, one), strict=True):
            assert torch.equal(got, want)


# --------------------------------------------------------------------------------------------------
# (5) Rewards never include the margin
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "name", "values"),
    [
        ("simpo", "gamma", [0.0, 1.0, 3.0]),
        ("simpo", "gamma_beta_ratio", [0.0, 0.5, 1.5]),
        ("slic_hf", "delta", [0.0, 1.0, 2.0]),
        ("ipo", "tau", [0.01, 0.1, 1.0]),
        ("rdpo", "alpha", [0.0, 0.05, 1.0]),
        ("simpo", "sft_weight", [0.0, 1.0]),
        ("cpo", "sft_weight", [0.0, 1.0]),
        ("rrhf", "sft_weight", [0.0, 1.0]),
        ("slic_hf", "sft_weight", [0.0, 1.0]),
        ("orpo", "or_weight", [0.0, 0.1, 1.0]),
        ("kto", "desirable_weight", [0.5, 1.0]),
    ],
)
def test_rewards_do_not_depend_on_margin_or_weights(method, name, values):
    t = tensors(BATCH)
    results = [call(method, t, **{name: v}) for v in values]
    losses = [r[0] for r in results]
    for _, chosen_rewards, rejected_rewards in results[1:]:
        assert torch.equal(chosen_rewards, results[0][1])
        assert torch.equal(rejected_rewards, results[0][2])
    assert not torch.equal(losses[0], losses[-1])  # the hyperparameter does change the loss


def test_simpo_rewards_are_scaled_average_log_likelihood():
    t = tensors(BATCH)
    _, chosen_rewards, rejected_rewards = call("simpo", t, beta=2.5, gamma=1.4)
    assert chosen_rewards.tolist() == pytest.approx(
        [2.5 * c / n for c, n in zip(BATCH["cw"], BATCH["lw"], strict=True)]
    )
    assert rejected_rewards.tolist() == pytest.approx(
        [2.5 * c / n for c, n in zip(BATCH["cl"], BATCH["ll"], strict=True)]
    )


# --------------------------------------------------------------------------------------------------
# Special cases
# --------------------------------------------------------------------------------------------------


def test_simpo_without_length_normalization():
    losses, chosen_rewards, _ = call("simpo", tensors(BATCH), beta=0.05, gamma=0.5, length_normalize=False)
    exp = [-logsig(0.05 * cw - 0.05 * cl - 0.5) for cw, cl, *_ in rows(BATCH)]
    assert losses.tolist() == pytest.approx(exp, rel=1e-5)
    assert chosen_rewards.tolist() == pytest.approx([0.05 * cw for cw in BATCH["cw"]])


def test_simpo_gamma_zero():
    losses, _, _ = call("simpo", tensors(BATCH), beta=2.0, gamma=0.0)
    exp = [-logsig(2.0 * cw / lw - 2.0 * cl / ll) for cw, cl, lw, ll, *_ in rows(BATCH)]
    assert losses.tolist() == pytest.approx(exp, rel=1e-5)


@pytest.mark.parametrize(("beta", "ratio"), [(2.0, 0.5), (2.5, 0.55), (10.0, 0.1)])
def test_simpo_gamma_beta_ratio_equals_absolute_gamma(beta, ratio):
    t = tensors(BATCH)
    by_ratio = call("simpo", t, beta=beta, gamma_beta_ratio=ratio)
    by_gamma = call("simpo", t, beta=beta, gamma=ratio * beta)
    for got, want in zip(by_ratio, by_gamma, strict=True):
        torch.testing.assert_close(got, want)


def test_rdpo_with_alpha_zero_is_dpo():
    t = tensors(BATCH)
    for got, want in zip(call("rdpo", t, beta=0.3, alpha=0.0), call("dpo", t, beta=0.3), strict=True):
        assert torch.equal(got, want)


def test_cpo_preference_term_is_simpo_without_ln_and_margin():
    t = tensors(BATCH)
    cpo = call("cpo", t, beta=0.05, sft_weight=0.0)
    simpo = call("simpo", t, beta=0.05, gamma=0.0, length_normalize=False)
    for got, want in zip(cpo, simpo, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("method", ["simpo", "cpo", "rrhf", "slic_hf"])
@pytest.mark.parametrize("weight", [0.1, 1.0, 10.0])
def test_sft_weight_adds_weighted_average_nll(method, weight):
    t = tensors(BATCH)
    base = call(method, t, sft_weight=0.0)[0]
    with_sft = call(method, t, sft_weight=weight)[0]
    nll_avg = [-cw / lw for cw, lw in zip(BATCH["cw"], BATCH["lw"], strict=True)]
    assert (with_sft - base).tolist() == pytest.approx([weight * x for x in nll_avg], rel=1e-5)


def test_orpo_log_odds_stable_near_probability_one():
    # avg log-prob 0 (p = 1) would make log(1 - p) = -inf; the clamp keeps it finite.
    t = tensors(dict(BATCH, cw=[0.0, -1e-9, -24.0]), requires_grad=True)
    losses, chosen_rewards, _ = call("orpo", t)
    assert torch.isfinite(losses).all() and torch.isfinite(chosen_rewards).all()
    losses.sum().backward()
    assert torch.isfinite(t["cw"].grad).all()


def test_reference_free_methods_ignore_reference_logps():
    t = tensors(BATCH)
    for method in METHOD_NAMES:
        if needs_reference(method):
            continue
        with_ref = call(method, t)
        without = preference_loss(method, t["cw"], t["cl"], t["lw"], t["ll"])
        for got, want in zip(with_ref, without, strict=True):
            assert torch.equal(got, want)


# --------------------------------------------------------------------------------------------------
# Registry, defaults and validation
# --------------------------------------------------------------------------------------------------

# The hyperparameters' names; their defaults are written only in the objectives' signatures.
EXPECTED_NAMES = {
    "simpo": ["beta", "gamma", "length_normalize", "sft_weight"],
    "dpo": ["beta"],
    "ipo": ["tau"],
    "cpo": ["beta", "sft_weight"],
    "kto": ["beta", "desirable_weight", "undesirable_weight"],
    "orpo": ["or_weight"],
    "rdpo": ["beta", "alpha"],
    "rrhf": ["sft_weight"],
    "slic_hf": ["delta", "sft_weight"],
    "sft": [],
}


def keyword_defaults(fn) -> dict:
    params = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def test_registry():
    assert METHOD_NAMES == tuple(EXPECTED_NAMES)
    assert {m for m in METHOD_NAMES if needs_reference(m)} == set(REFERENCE_METHODS)
    for method, spec in LOSSES.items():
        assert list(spec.defaults) == EXPECTED_NAMES[method]
        assert spec.reference == needs_reference(method)
        assert spec.doc and "\n" not in spec.doc
        assert spec.fn.__doc__
        # One place: the registry's defaults are the function's keyword defaults.
        assert spec.defaults == keyword_defaults(spec.fn)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_validate_hparams_returns_the_signature_defaults(method):
    assert validate_hparams(method, {}) == keyword_defaults(LOSSES[method].fn)


def test_a_default_changed_in_the_signature_changes_everywhere(monkeypatch):
    """Change-one-place: a default moved in the objective's signature is the registry's, the
    resolved trial's and a staged sweep's held value, with nothing else to edit."""
    from ablate.losses import LossSpec, accepted
    from ablate.losses import registry as R

    def simpo_margin_3(*args, beta: float = 2.0, gamma: float = 3.0, length_normalize: bool = True,
                       sft_weight: float = 0.0):  # fmt: skip
        """SimPO with another default margin."""

    monkeypatch.setitem(R.LOSSES, "simpo", LossSpec(simpo_margin_3, False, "SimPO."))
    assert R.LOSSES["simpo"].defaults["gamma"] == 3.0
    assert validate_hparams("simpo", {})["gamma"] == 3.0
    assert accepted("simpo")["gamma_beta_ratio"] == 1.5


def test_validate_hparams_merges_and_resolves_gamma():
    assert validate_hparams("dpo", {"beta": 1}) == {"beta": 1.0}
    assert validate_hparams("simpo", {"beta": 2.5, "gamma_beta_ratio": 0.4}) == {
        "beta": 2.5,
        "gamma": 1.0,
        "length_normalize": True,
        "sft_weight": 0.0,
    }  # one name for the margin from here on: the ratio is resolved into gamma
    resolved = validate_hparams("simpo", {"beta": 4.0, "gamma": 1.0, "length_normalize": False})
    assert "gamma_beta_ratio" not in resolved and resolved["length_normalize"] is False


def test_the_loss_does_not_check_its_hyperparameters_again(monkeypatch):
    """Checked once, at expansion: the loss (every micro-batch) neither calls the check nor repeats it."""
    from ablate.losses import registry as R

    calls = []
    monkeypatch.setattr(R, "validate_hparams", lambda *a: calls.append(a) or {})
    t = tensors(BATCH)
    resolved = keyword_defaults(LOSSES["simpo"].fn)
    for _ in range(3):
        preference_loss("simpo", t["cw"], t["cl"], t["lw"], t["ll"], **resolved)
    assert calls == []
    # A value the check refuses (beta <= 0) reaches the objective as it is: no check at this level.
    losses, _, _ = preference_loss("simpo", t["cw"], t["cl"], t["lw"], t["ll"], **{**resolved, "beta": -1.0})
    assert torch.isfinite(losses).all()


def test_error_message_format():
    with pytest.raises(ValueError, match=r"^simpo: beta must be > 0, got -1\.0$"):
        validate_hparams("simpo", {"beta": -1.0})


BAD_HPARAMS = [
    ("nope", {}, "nope"),
    ("simpo", {"tau": 0.1}, "tau"),
    ("sft", {"beta": 1.0}, "beta"),
    ("dpo", {"gamma": 1.0}, "gamma"),
    ("simpo", {"beta": -1.0}, "beta"),
    ("dpo", {"beta": 0.0}, "beta"),
    ("kto", {"beta": -0.1}, "beta"),
    ("ipo", {"tau": 0.0}, "tau"),
    ("ipo", {"tau": -0.5}, "tau"),
    ("simpo", {"sft_weight": -0.1}, "sft_weight"),
    ("cpo", {"sft_weight": -1.0}, "sft_weight"),
    ("rrhf", {"sft_weight": -1.0}, "sft_weight"),
    ("slic_hf", {"sft_weight": -1.0}, "sft_weight"),
    ("orpo", {"or_weight": -0.1}, "or_weight"),
    ("kto", {"desirable_weight": -1.0}, "desirable_weight"),
    ("kto", {"undesirable_weight": -1.0}, "undesirable_weight"),
    ("slic_hf", {"delta": -0.5}, "delta"),
    ("simpo", {"gamma": 1.0, "gamma_beta_ratio": 0.5}, "gamma_beta_ratio"),
    ("dpo", {"beta": "0.1"}, "beta"),
    ("kto", {"beta": None}, "beta"),
    ("simpo", {"beta": True}, "beta"),
    ("simpo", {"length_normalize": 1}, "length_normalize"),
    ("rdpo", {"alpha": float("nan")}, "alpha"),
]


@pytest.mark.parametrize(("method", "hp", "arg"), BAD_HPARAMS, ids=[f"{m}-{a}" for m, _, a in BAD_HPARAMS])
def test_invalid_hparams_raise(method, hp, arg):
    with pytest.raises(ValueError) as excinfo:
        validate_hparams(method, hp)
    assert method in str(excinfo.value) and arg in str(excinfo.value)


def test_unknown_method_lists_known_methods():
    with pytest.raises(ValueError, match="simpo") as excinfo:
        needs_reference("nope")
    assert all(m in str(excinfo.value) for m in METHOD_NAMES)


def test_unknown_hparam_lists_accepted_ones():
    with pytest.raises(ValueError, match="kto") as excinfo:
        validate_hparams("kto", {"gamma": 1.0})
    assert all(name in str(excinfo.value) for name in EXPECTED_NAMES["kto"])


@pytest.mark.parametrize("missing", ["ref_chosen_logps", "ref_rejected_logps"])
@pytest.mark.parametrize("method", REFERENCE_METHODS)
def test_missing_reference_raises(method, missing):
    t = tensors(BATCH)
    refs = {"ref_chosen_logps": t["rcw"], "ref_rejected_logps": t["rcl"], missing: None}
    with pytest.raises(ValueError) as excinfo:
        preference_loss(method, t["cw"], t["cl"], t["lw"], t["ll"], **refs)
    assert method in str(excinfo.value) and missing in str(excinfo.value)


def test_shape_mismatch_raises():
    t = tensors(BATCH)
    with pytest.raises(ValueError, match="dpo: ref_rejected_logps"):
        preference_loss("dpo", t["cw"], t["cl"], t["lw"], t["ll"], t["rcw"], t["rcl"][:2])
