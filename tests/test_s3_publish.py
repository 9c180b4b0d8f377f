"""Publishing to the storage root on a real S3 protocol server (moto on 127.0.0.1), with injected faults."""

import json
import socket
import time

import pytest

from k2core.storage.publish import PUBLISHED, fetch, publish_path, read_manifest
from k2core.storage.root import RetryConfig, StorageConfig, StorageError, check_root, root_filesystem, storage_uri
from tests.s3_testing import CREDENTIALS, FaultPlan, FaultProxy, moto_with_bucket

BUCKET = "k2-publish"
RETRIES = RetryConfig(max_attempts=4, connect_timeout_s=2, read_timeout_s=10)


@pytest.fixture(scope="module")
def moto():
    with moto_with_bucket(BUCKET, RETRIES) as address:
        yield address


@pytest.fixture
def proxy(moto, monkeypatch):
    """S3 requests go through a fault-injecting proxy; `direct` reads moto without it."""
    with FaultProxy(*moto) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL", running.url)
        yield running


def direct(moto, uri: str) -> bytes:
    """An object's bytes read from moto itself, past the proxy."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=f"http://{moto[0]}:{moto[1]}", skip_instance_cache=True)
    return fs.cat_file(uri.removeprefix("s3://"))


def checkpoint_like(folder, seed: int = 0):
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"seed": seed}))
    (folder / "model.safetensors").write_bytes(bytes((i * 7 + seed) % 256 for i in range(300_000)))
    (folder / "sub" / "tokenizer.json").write_text("{}" * 100)
    return folder


def assert_same_tree(a, b):
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    request.getfixturevalue("moto")
    return f"s3://{BUCKET}/{request.node.name.replace('[', '-').rstrip(']')}"


def test_publish_reads_back_through_the_manifest_and_is_idempotent(root, tmp_path):
    work = tmp_path / "repo"
    checkpoint_like(work / "checkpoints" / "sft")
    (work / "metrics").mkdir()
    (work / "metrics" / "sft.json").write_text('{"loss": 1.5}\n')
    uri = publish_path(work, "checkpoints/sft", root, RETRIES)
    assert uri == storage_uri(root, "checkpoints/sft") == f"{root}/checkpoints/sft"
    first = read_manifest(uri, RETRIES)
    assert sorted(first["files"]) == ["config.json", "model.safetensors", "sub/tokenizer.json"]
    assert_same_tree(work / "checkpoints" / "sft", fetch(uri, tmp_path / "got", RETRIES))

    fs, path = root_filesystem(uri, RETRIES)
    listing = sorted(fs.find(path))
    publish_path(work, "checkpoints/sft", root, RETRIES)  # same bytes: nothing new is written
    fs.invalidate_cache()
    assert sorted(fs.find(path)) == listing and read_manifest(uri, RETRIES) == first

    checkpoint_like(work / "checkpoints" / "sft", seed=1)
    publish_path(work, "checkpoints/sft", root, RETRIES)
    fs.invalidate_cache()
    second = read_manifest(uri, RETRIES)
    assert second["version"] != first["version"]
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)) == [PUBLISHED, f"v-{second['version']}"]
    assert_same_tree(work / "checkpoints" / "sft", fetch(uri, tmp_path / "got", RETRIES))

    metrics_uri = publish_path(work, "metrics/sft.json", root, RETRIES)
    assert fs.cat_file(root_filesystem(metrics_uri, RETRIES)[1]) == b'{"loss": 1.5}\n'


def test_transient_faults_are_retried_and_the_result_is_byte_identical(proxy, moto, tmp_path):
    work = tmp_path / "repo"
    checkpoint_like(work / "checkpoints" / "rl")
    proxy.plan = FaultPlan(every=2)  # every other request fails: 500, 503, SlowDown, reset in turn
    uri = publish_path(work, "checkpoints/rl", f"s3://{BUCKET}/faulty", RETRIES)
    assert {"500", "503", "slowdown", "reset"} <= set(proxy.plan.faults), proxy.plan.faults
    proxy.plan = FaultPlan()
    clean = publish_path(work, "checkpoints/rl", f"s3://{BUCKET}/clean", RETRIES)
    assert direct(moto, f"{uri}/{PUBLISHED}") == direct(moto, f"{clean}/{PUBLISHED}")
    proxy.plan = FaultPlan(every=3)
    assert_same_tree(work / "checkpoints" / "rl", fetch(uri, tmp_path / "got", RETRIES))


def test_a_persistent_fault_fails_clearly_and_leaves_the_previous_version(proxy, moto, tmp_path):
    work = tmp_path / "repo"
    folder = checkpoint_like(work / "data" / "validated")
    root = f"s3://{BUCKET}/persistent"
    uri = publish_path(work, "data/validated", root, RETRIES)
    before = direct(moto, f"{uri}/{PUBLISHED}")
    checkpoint_like(folder, seed=2)
    proxy.plan = FaultPlan(persistent=True, kinds=("503", "slowdown", "reset"))
    started = time.monotonic()
    with pytest.raises(StorageError) as failure:
        publish_path(work, "data/validated", root, RETRIES)
    elapsed = time.monotonic() - started
    message = str(failure.value)
    assert "\n" not in message and uri in message and "4 attempts" in message, message
    # Bounded: the first upload is tried max_attempts times by botocore (aiohttp may reconnect once after a reset).
    assert RETRIES.max_attempts <= len(proxy.plan.faults) <= 2 * RETRIES.max_attempts, proxy.plan.faults
    print(message, len(proxy.plan.faults), f"{elapsed:.1f} s")
    assert elapsed < 30
    assert direct(moto, f"{uri}/{PUBLISHED}") == before  # readers still get the complete previous version
    with pytest.raises(StorageError):
        publish_path(work, "data/validated", f"{root}-new", RetryConfig(max_attempts=2, connect_timeout_s=2,
                                                                        read_timeout_s=10))
    with pytest.raises(FileNotFoundError):
        direct(moto, f"{root}-new/data/validated/{PUBLISHED}")  # never published: no final key at all


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_is_one_clear_line(monkeypatch):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    quick = RetryConfig(max_attempts=2, connect_timeout_s=1, read_timeout_s=1)
    with pytest.raises(StorageError) as failure:
        check_root("s3://k2-anywhere/prefix", quick)
    message = str(failure.value)
    assert "\n" not in message and endpoint in message and "AWS_ENDPOINT_URL" in message, message


def test_missing_bucket_is_one_clear_line(moto):
    with pytest.raises(StorageError) as failure:
        check_root("s3://k2-no-such-bucket/prefix", RETRIES)
    message = str(failure.value)
    assert "\n" not in message and "'k2-no-such-bucket' does not exist" in message and "aws s3 mb" in message
    check_root(f"s3://{BUCKET}/prefix", RETRIES)  # an existing bucket passes


@pytest.mark.parametrize("root, problem", [
    ("s3://KEY:SECRET@bucket/prefix", "credentials"),
    ("relative/folder", "absolute path"),
])
def test_storage_root_rejects_credentials_and_relative_paths(root, problem):
    with pytest.raises(ValueError, match=problem):
        StorageConfig(root=root, retries=RETRIES)
    assert StorageConfig(root="s3://bucket/prefix/", retries=RETRIES).root == "s3://bucket/prefix"


def test_storage_uri_stays_inside_the_root():
    assert storage_uri("s3://b/p/", "data/validated") == "s3://b/p/data/validated"
    for bad in ("", "../x", "data/../../x"):
        with pytest.raises(ValueError):
            storage_uri("s3://b/p", bad)
