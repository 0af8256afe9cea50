"""The sweep file's ``tracking`` section: the experiment trackers a sweep logs to (``ablate.tracking``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ablate.spec.base import Strict


class MLflowTracking(Strict):
    """One MLflow run per trial under a parent run per sweep (Ray Tune's MLflowLoggerCallback)."""

    tracking_uri: str | None = Field(
        None,
        description="http(s)://host:port of a tracking server, a local path or sqlite:///file.db (default: "
        "MLFLOW_TRACKING_URI, else ./mlruns). Credentials only from the environment "
        "(MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN), never in the URI.",
    )
    experiment_name: str | None = Field(None, description="Default: the sweep's name.")

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        from urllib.parse import urlsplit

        if v and urlsplit(v).password is not None:
            raise ValueError(
                "the URI holds a password, which would end up in the sweep's records; remove it and set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment instead"
            )
        return v


class WandbTracking(Strict):
    """One W&B run per trial, grouped by sweep (Ray Tune's WandbLoggerCallback). The API key only from
    the environment (WANDB_API_KEY) or `wandb login`."""

    project: str | None = Field(None, description="Default: the sweep's name.")
    entity: str | None = Field(None, description="Team or user (default: your default entity).")
    group: str | None = Field(None, description="Default: the sweep's name.")
    mode: Literal["online", "offline"] = Field(
        "online", description="offline: run directories only (sync later with `wandb sync`)."
    )


class TrackingConfig(Strict):
    """Experiment trackers the sweep logs to; several at once are fine, none by default."""

    mlflow: MLflowTracking | None = None
    wandb: WandbTracking | None = None
    tensorboard: bool = Field(
        False, description="TensorBoard event files, one run per trial, in <storage>/<name>/tensorboard/."
    )

    @property
    def any(self) -> bool:
        return self.mlflow is not None or self.wandb is not None or self.tensorboard
