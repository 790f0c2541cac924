"""Prefect flows and the CLI. Importing this package sets quiet, offline-safe Prefect defaults (no telemetry, the
server's nor the client's, whose first-run notice Prefect prints on a terminal; and 3 minutes instead of 20 s for a
temporary API server to start, which a loaded 2-core machine needs; the CLI uses glscl's local server instead, see
local_server.py); a user's own PREFECT_* and DO_NOT_TRACK settings win."""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LOG_PRINTS", "true")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
