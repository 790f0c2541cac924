"""Offline check of prefect.yaml: every deployment names a real flow, its parameters validate against the flow's
typed config, its schedules parse, and the work pool is the documented process pool."""

import importlib
from pathlib import Path

import pytest
import yaml
from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule

ROOT = Path(__file__).resolve().parent.parent
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_deployment_is_valid(deployment):
    path, name = deployment["entrypoint"].split(":")
    assert (ROOT / path).is_file()
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
    assert isinstance(flow, Flow)
    validated = flow.validate_parameters(deployment.get("parameters", {}))
    assert type(validated["config"]).__name__.endswith("Config")
    for schedule in deployment.get("schedules", []):
        CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
    assert deployment["work_pool"]["name"] == "glscl-process"
    assert deployment["concurrency_limit"] == 1


def test_bad_parameters_are_refused():
    from pipelines.ingest import ingest_flow

    with pytest.raises(Exception, match="sources"):
        ingest_flow.validate_parameters({"config": {"store": {"uri": "x"}}})


def test_maintain_is_scheduled_nightly():
    (maintain,) = [d for d in DEPLOYMENTS if d["name"] == "maintain"]
    assert maintain["entrypoint"] == "pipelines/maintain.py:maintain_flow"
    (schedule,) = maintain["schedules"]
    minute, hour, *every = schedule["cron"].split()
    assert minute.isdigit() and hour.isdigit() and every == ["*", "*", "*"]
