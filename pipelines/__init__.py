"""Prefect flows and the CLI. Importing this package sets quiet, offline-safe Prefect defaults (no telemetry,
an in-process temporary API when no server is configured); a user's own PREFECT_* settings win."""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LOG_PRINTS", "true")
