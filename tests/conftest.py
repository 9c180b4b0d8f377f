"""Shared test settings: small thread counts (CI has 2 cores) and offline hubs."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch  # noqa: E402

torch.set_num_threads(1)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One real Prefect server on 127.0.0.1 for the whole test session."""
    from flows.servers import prefect_server

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with prefect_server(tmp_path_factory.mktemp("prefect-root")) as api:
        yield api
        # Flush Prefect's background log and event workers while the server is still up; left for interpreter exit
        # they would find no server (and start a temporary one, logging to pytest's already closed streams).
        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
