"""The ``rendezvous`` fault (ablate.faults) that tests use to prove trials ran at the same time: it
passes once every trial given one has arrived, and fails, never hangs, when one does not come."""

from __future__ import annotations

import threading

import pytest

from ablate import faults

FAULT = "index=0,step=1,kind=rendezvous;index=1,step=1,kind=rendezvous"


def test_rendezvous_passes_when_all_arrive(tmp_path):
    env = {faults.ENV: FAULT, faults.RENDEZVOUS_ENV: str(tmp_path)}
    other = threading.Thread(target=faults.fire, args=("rendezvous", 1, 1, env))
    other.start()
    faults.fire("rendezvous", 1, 0, env)  # returns only once trial 1 has arrived too
    other.join(timeout=60)
    assert not other.is_alive() and sorted(p.name for p in tmp_path.iterdir()) == ["0", "1"]


def test_rendezvous_fails_when_a_trial_never_comes(tmp_path, monkeypatch):
    monkeypatch.setattr(faults, "RENDEZVOUS_TIMEOUT_S", 0.2)
    env = {faults.ENV: FAULT, faults.RENDEZVOUS_ENV: str(tmp_path)}
    with pytest.raises(faults.InjectedFault, match=r"trials \['0'\] of \['0', '1'\]"):
        faults.fire("rendezvous", 1, 0, env)
