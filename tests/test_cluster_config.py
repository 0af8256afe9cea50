"""The cluster launcher files validate against the schema of the installed Ray, offline (no cloud
SDK, no SSH), and keep the security settings docs/cluster.md promises."""

from __future__ import annotations

import copy

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.conftest import REPO

FILES = ["cluster.yaml", "cluster-local.yaml"]


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


@pytest.mark.parametrize("name", FILES)
def test_cluster_file_validates_against_rays_schema(name):
    config = prepare_config(load(name))  # fills defaults, as `ray up` does before validating
    validate_config(config)
    assert config["head_node_type"] in config["available_node_types"]


@pytest.mark.parametrize("name", FILES)
def test_cluster_keeps_auth_on_and_dashboard_private(name):
    config = load(name)
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # the shared secret
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in yaml.safe_dump(config)
    assert "~/ablate" in config["file_mounts"]  # the project, sweep files included
    assert any("pip install" in c and "-e ~/ablate" in c for c in config["setup_commands"])


def test_aws_cluster_has_a_cpu_head_and_8_gpu_workers_and_no_extra_open_ports():
    config = load("cluster.yaml")
    types = config["available_node_types"]
    assert config["provider"]["type"] == "aws"
    assert types[config["head_node_type"]]["node_config"]["InstanceType"].startswith("m")  # CPU only
    gpu = [t for k, t in types.items() if k != config["head_node_type"]]
    assert gpu and all(t["node_config"]["InstanceType"] == "p5.48xlarge" for t in gpu)  # 8x H100 each
    assert all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in gpu)
    # Only the launcher's default rules: SSH from outside, everything else between cluster nodes.
    assert "IpPermissions" not in config["provider"].get("security_group", {})


def test_validation_catches_a_broken_file():
    config = copy.deepcopy(load("cluster.yaml"))
    config["available_node_types"]["gpu_8x_h100"]["max_wrokers"] = 4
    with pytest.raises(Exception, match="max_wrokers"):
        validate_config(prepare_config(config))
