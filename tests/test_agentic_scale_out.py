"""Scale-out without code changes: the mapped shards run on a Dask cluster of worker processes and on Prefect's
process pool and give exactly the in-process data. The workers build the LLM backends from config (the model here
is a deterministic one behind a real OpenAI-compatible server on 127.0.0.1), cache its answers where the config
says (so later runs ask it nothing), and start the live git MCP server themselves."""

import importlib.util
import threading

import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from k2core.agentic import AgenticConfig, generate_tool_datasets, workers
from k2core.agentic.workers import ALL_ROLES, backends_for
from k2core.llm import OpenAILLMConfig
from k2core.llm.server import running_server
from tasks.agentic import generate_tool_datasets_mapped, map_shards, task_runner
from tests.test_agentic_live import GIT, live_config
from tests.test_agentic_simulated import WorldUserJudge, mcp_file

URL_ENV = "K2_TEST_SCALE_OUT_URL"
ROLES = dict(tool_generator=None, user="m", tool_simulator="m", judge="m", judge_votes=1, json_retries=0,
             temperature=0.0, max_tokens=64)
TABLES = ("tasks", "sft", "tools", "agents")


class CountingModel(WorldUserJudge):
    """The deterministic user/simulator/judge model, counting the requests that reach the server."""

    def __init__(self):
        self.requests = 0
        self._lock = threading.Lock()

    def complete(self, request):
        with self._lock:
            self.requests += 1
        return super().complete(request)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(config, llm configs, model): four shards with LLM roles and live git tasks."""
    tmp = tmp_path_factory.mktemp("scale-out")
    # git only: the time server's results follow the clock
    base = live_config(mcp_file(tmp), servers=(GIT,), num_tasks=4, live_tasks=4, trajectories_per_task=1)
    cfg = AgenticConfig(**{**base.model_dump(), "num_shards": 4, "roles": ROLES})
    llm = {"m": OpenAILLMConfig(kind="openai", model="m", base_url_env=URL_ENV, max_retries=0,
                                cache_dir=str(tmp / "llm-cache"))}
    model = CountingModel()
    with running_server(model, "m") as server, pytest.MonkeyPatch.context() as patch:
        patch.setenv(URL_ENV, server.url)  # before any worker process starts: they inherit it
        yield cfg, llm, model


def mapped_run(cfg, llm, runner, api):
    @flow(name="agentic-scale-out-test", task_runner=runner)
    def run():
        return generate_tool_datasets_mapped(cfg, seed=2, llm=llm)

    with temporary_settings(updates={PREFECT_API_URL: api}):
        return run()


@pytest.fixture(scope="module")
def dask_run(setup, prefect_api):
    """The first run: on a LocalCluster of two single-threaded worker processes, with an empty cache."""
    pytest.importorskip("prefect_dask")  # pinned by the project: prefect-dask==0.3.7
    cfg, llm, model = setup
    data = mapped_run(cfg, llm, task_runner("dask:2"), prefect_api)
    return data, model.requests


def test_dask_workers_build_backends_and_match_the_in_process_run(setup, dask_run):
    cfg, llm, model = setup
    mapped, asked = dask_run
    assert asked > 0 and not workers._built  # the workers, not this process, built the backends and asked the model
    sim = mapped.stats["simulated"]
    assert sim["llm"]["tool_simulator_calls"] > 0 and sim["llm"]["judge_votes"] == sim["generated"]
    live = sim["live"]
    assert live["generated"] > 0 and live["real_calls"] > 0 and live["start_failures"] == {}  # git ran in the workers
    local = generate_tool_datasets(cfg, seed=2, backends=backends_for(cfg, llm, ALL_ROLES))
    assert model.requests == asked  # every answer came from the cache the workers filled at the configured path
    for name in TABLES:
        assert getattr(mapped, name).equals(getattr(local, name)), name
    assert mapped.stats == local.stats and len(mapped.sft) == mapped.stats["kept_total"] > 0


def test_process_pool_rerun_is_identical_and_free(setup, dask_run, prefect_api):
    cfg, llm, model = setup
    mapped, asked = dask_run
    again = mapped_run(cfg, llm, task_runner("processes:2"), prefect_api)
    assert model.requests == asked
    for name in TABLES:
        assert getattr(again, name).equals(getattr(mapped, name)), name
    assert again.stats == mapped.stats


def test_shards_carry_backend_configs_not_backends(setup):
    cfg, llm, _ = setup
    with pytest.raises(ValueError, match=r"\['m'\]"):
        map_shards(cfg, {})
    with pytest.raises(TypeError, match="workers build their own backends"):
        map_shards(cfg, {"m": WorldUserJudge()})
    offline = AgenticConfig(**{**cfg.model_dump(), "roles": None})
    assert workers.role_configs(offline, llm) == {} and workers.role_configs(cfg, llm) == llm


def test_task_runner_specs():
    assert isinstance(task_runner(None), ThreadPoolTaskRunner) and task_runner("threads:2")._max_workers == 2
    processes = task_runner("processes:3")
    assert isinstance(processes, ProcessPoolTaskRunner) and processes._max_workers == 3
    if importlib.util.find_spec("prefect_dask") is not None:
        local = task_runner("dask:2")
        assert local.cluster_class == "distributed.LocalCluster" and local.address is None
        assert local.cluster_kwargs == {"processes": True, "threads_per_worker": 1, "n_workers": 2}
        assert task_runner("dask:tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    for kind, package in (("dask", "prefect_dask"), ("ray", "prefect_ray")):
        if importlib.util.find_spec(package) is None:
            with pytest.raises(ModuleNotFoundError, match=f"pip install {package.replace('_', '-')}"):
                task_runner(kind)
    for bad in ("threads:many", "spark"):
        with pytest.raises(ValueError, match="task runner"):
            task_runner(bad)
