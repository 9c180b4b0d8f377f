"""Transient failures are retried with backoff, deterministic ones are not (k2core.transient, tasks.k2_task)."""

from __future__ import annotations

import errno
import socket
import urllib.error
import urllib.request

import botocore.exceptions
import httpx
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import BaseModel, ValidationError
from s3fs.errors import translate_boto_error

import tasks.agentic
import tasks.data
import tasks.dvc_stage
import tasks.evaluation
import tasks.training
from flows.servers import free_port
from k2core.config import ConfigError
from k2core.errors import UserError
from k2core.transient import is_transient
from k2core.validation.validate import RejectThresholdError
from tasks import RETRY_DELAYS_S, k2_task, retry_if_transient


def _client_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def _http_status_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    return httpx.HTTPStatusError("status", request=request, response=httpx.Response(status, request=request))


def _refused() -> urllib.error.URLError:
    """A real refused connection: nothing listens on a free loopback port."""
    with pytest.raises(urllib.error.URLError) as caught:
        urllib.request.urlopen(f"http://127.0.0.1:{free_port(0)}/health", timeout=5)
    return caught.value


def _validation_error() -> ValidationError:
    class Lr(BaseModel):
        lr: float

    with pytest.raises(ValidationError) as caught:
        Lr(lr="fast")
    return caught.value


def _wrapped(outer: type[Exception], cause: BaseException) -> Exception:
    try:
        raise outer("stage failed") from cause
    except outer as error:
        return error


TRANSIENT = {
    "connection reset": ConnectionResetError(errno.ECONNRESET, "reset by peer"),
    "timeout": socket.timeout("timed out"),
    "refused (urllib, real)": _refused(),
    "s3 endpoint unreachable": botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
    "s3 read timeout": botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
    "s3 SlowDown 503": _client_error("SlowDown", 503),
    "s3 InternalError 500": _client_error("InternalError", 500),
    "s3fs 500 (EREMOTEIO)": translate_boto_error(_client_error("InternalError", 500)),
    "s3fs SlowDown (EBUSY)": translate_boto_error(_client_error("SlowDown", 503)),
    "llm connect error": httpx.ConnectError("refused"),
    "llm 503": _http_status_error(503),
    "llm 429": _http_status_error(429),
    "http 502 (urllib)": urllib.error.HTTPError("http://127.0.0.1", 502, "Bad Gateway", {}, None),
    "runtime error raised from a reset": _wrapped(RuntimeError, ConnectionResetError()),
}
DETERMINISTIC = {
    "config error": ConfigError("params.yaml: sft.ci.lr: must be > 0"),
    "value error": ValueError("bad value"),
    "pydantic validation": _validation_error(),
    "reject threshold exceeded": RejectThresholdError("validate: 12% rejected > max_reject_fraction 5%"),
    "missing file": FileNotFoundError(errno.ENOENT, "no such file", "data/synth/corpus.parquet"),
    "s3 NoSuchBucket": _client_error("NoSuchBucket", 404),
    "s3fs access denied": translate_boto_error(_client_error("AccessDenied", 403)),
    "llm 401": _http_status_error(401),
    "http 404 (urllib)": urllib.error.HTTPError("http://127.0.0.1", 404, "Not Found", {}, None),
    "config error raised from a reset": _wrapped(ConfigError, ConnectionResetError()),
    "user error raised from a refused connection (S3 retries spent)": _wrapped(UserError, ConnectionRefusedError()),
    "plain runtime error": RuntimeError("loss is nan"),
}


@pytest.mark.parametrize("name", TRANSIENT)
def test_transient_faults_are_classified_transient(name):
    assert is_transient(TRANSIENT[name])


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_failures_are_not_transient(name):
    assert not is_transient(DETERMINISTIC[name])


def test_every_project_task_retries_only_transient_failures_with_backoff():
    project_tasks = [tasks.dvc_stage.reproduce, tasks.training.pretrain_model, tasks.training.publish_checkpoint,
                     tasks.data.validate, tasks.evaluation.benchmark, tasks.agentic.generate_shard]
    for task in project_tasks:
        assert task.retry_condition_fn is retry_if_transient, task.name
        assert task.retry_delay_seconds == RETRY_DELAYS_S and task.retry_jitter_factor > 0, task.name
    assert RETRY_DELAYS_S == sorted(RETRY_DELAYS_S) and RETRY_DELAYS_S[0] < RETRY_DELAYS_S[-1]
    assert tasks.training.publish_checkpoint.retries == len(RETRY_DELAYS_S)


def test_the_engine_retries_a_transient_failure_and_not_a_deterministic_one(prefect_api):
    calls = {"flaky": 0, "bad": 0}

    def flaky_upload() -> str:
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise translate_boto_error(_client_error("SlowDown", 503))
        return "uploaded"

    def bad_params() -> None:
        calls["bad"] += 1
        raise ConfigError("params.yaml: sft.ci.lr: must be > 0")

    no_wait = {"retry_delay_seconds": 0}  # the project's policy, without its delays
    flaky_task, bad_task = k2_task(flaky_upload, **no_wait), k2_task(bad_params, **no_wait)

    @flow(name="retry-policy-test")
    def both():
        return flaky_task(return_state=True), bad_task(return_state=True)

    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        flaky_state, bad_state = both()
        with get_client(sync_client=True) as client:
            flaky_run = client.read_task_run(flaky_state.state_details.task_run_id)
            bad_run = client.read_task_run(bad_state.state_details.task_run_id)
    assert flaky_state.is_completed() and flaky_state.result() == "uploaded"
    assert bad_state.is_failed() and "sft.ci.lr" in bad_state.message
    assert calls == {"flaky": 3, "bad": 1}
    assert (flaky_run.run_count, flaky_run.state.type.value) == (3, "COMPLETED")
    assert (bad_run.run_count, bad_run.state.type.value) == (1, "FAILED")
