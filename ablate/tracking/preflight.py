"""Checks of a sweep's ``tracking`` section before anything launches (``ablate.run``): the trackers'
packages are installed, an MLflow tracking server answers (with the credentials of the environment)
and W&B online has an API key and a reachable server. Each problem is one sentence; the CLI exits 2.

Only network trackers are checked; a local MLflow store (a path, ``sqlite:///``) and W&B offline need
nothing but a writable disk. Credentials are read from the environment only, as the trackers do."""

from __future__ import annotations

import importlib.util
import netrc
import os
import socket
from urllib.parse import urlsplit

TIMEOUT_S = 5


def problem(tracking) -> str | None:
    """Why the sweep cannot log where its ``tracking`` section says (``field: what; fix``), or None."""
    needed = {"mlflow": tracking.mlflow is not None, "wandb": tracking.wandb is not None,
              "tensorboardX": tracking.tensorboard}  # fmt: skip
    missing = [name for name, used in needed.items() if used and importlib.util.find_spec(name) is None]
    if missing:
        return (f"tracking: {', '.join(missing)} is not installed. Install the trackers with "
                "`pip install -e '.[tracking]'` (or `pip install mlflow wandb tensorboard`).")  # fmt: skip
    if tracking.mlflow is not None:
        found = mlflow_problem(tracking.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
        if found:
            return found
    if tracking.wandb is not None and tracking.wandb.mode == "online":
        return wandb_problem()
    return None


def mlflow_problem(uri: str | None) -> str | None:
    """An http(s) tracking URI must answer MLflow's REST API within a few seconds."""
    if not uri or urlsplit(uri).scheme not in ("http", "https"):
        return None  # a local store, or a scheme only its own plugin can check (databricks, ...)
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    where = "tracking.mlflow.tracking_uri"
    try:
        response = http_request(get_default_host_creds(uri), "/api/2.0/mlflow/experiments/search", "GET",
                                params={"max_results": 1}, max_retries=0, timeout=TIMEOUT_S,
                                raise_on_status=False)  # fmt: skip
    except Exception as e:  # noqa: BLE001 - connection refused, DNS, TLS, timeout: all mean unreachable
        reason = str(e).splitlines()[0][:200]
        return (f"{where}: cannot reach the MLflow tracking server at {uri} ({type(e).__name__}: {reason}). "
                "Start the server, fix the URI, or remove `tracking.mlflow`; nothing was launched.")  # fmt: skip
    if response.status_code in (401, 403):
        return (f"{where}: the MLflow server at {uri} refused the credentials (HTTP {response.status_code}). "
                "Set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the "
                "environment; they are never read from the sweep file.")  # fmt: skip
    if response.status_code != 200:
        return (f"{where}: {uri} does not answer like an MLflow tracking server (HTTP {response.status_code} "
                "on /api/2.0/mlflow/experiments/search). Give the server's base URL, e.g. http://host:5000.")  # fmt: skip
    return None


def _has_netrc_key(host: str) -> bool:
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_problem() -> str | None:
    """W&B online needs an API key (environment or ``wandb login``) and its server reachable."""
    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    parts = urlsplit(base)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    if not os.environ.get("WANDB_API_KEY") and not _has_netrc_key(host):
        return ("tracking.wandb: W&B online needs an API key: set WANDB_API_KEY in the environment or run "
                "`wandb login` (never put the key in the sweep file), or set `mode: offline`.")  # fmt: skip
    try:
        socket.create_connection((host, port), timeout=TIMEOUT_S).close()
    except OSError as e:
        return (f"tracking.wandb: cannot reach the W&B server at {base} ({e.strerror or e}). Check the network "
                "or WANDB_BASE_URL, or set `mode: offline` and sync later with `wandb sync`.")  # fmt: skip
    return None
