"""Prefect artifacts: every flow publishes its run summary as a Markdown artifact, so that a run's counts,
failures, throughput and table versions show on its page in the Prefect UI (and in `prefect artifact ls`) without
opening the `runs` table."""

from __future__ import annotations

import re

import httpx
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

_KEY = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


def publish_summary(flow: str, markdown: str, description: str) -> None:
    """Publish a flow run's summary under the key `glscl-<flow>-summary` (one key per flow, so Prefect keeps each
    flow's summaries as one history and every flow run links to its own; `flow` must be lowercase letters, digits
    and dashes, as Prefect requires of keys).

    The artifact is a copy: the outcome is already committed to the `runs` table. So an API that cannot be
    reached (a Prefect server stopped mid-run) is logged, and does not turn a finished run into a failed one.
    """
    key = f"glscl-{flow}-summary"
    if not _KEY.fullmatch(key):
        raise ValueError(f"artifact key {key!r}: use lowercase letters, digits and dashes")
    try:
        create_markdown_artifact(markdown=markdown, key=key, description=description)
    except httpx.TransportError as error:
        get_run_logger().warning("summary artifact %s not published, the Prefect API is unreachable: %s", key, error)
