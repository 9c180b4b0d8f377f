"""Storage on local disk and on S3 (a real S3 protocol server: moto on 127.0.0.1)."""

import pandas as pd
import pytest

from k2core.storage import content_digest, exists, filesystem, read_json, read_parquet, replace_dir, write_json, write_parquet


@pytest.fixture(scope="module")
def s3_bucket(monkeypatch_module):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch_module.setenv(key, value)
    fs, _ = filesystem("s3://k2-test-bucket")
    fs.mkdir("k2-test-bucket")
    yield "s3://k2-test-bucket"
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path)
    return request.getfixturevalue("s3_bucket") + f"/{request.node.originalname}"


def test_parquet_and_json_round_trip(root):
    df = pd.DataFrame({"doc_id": ["a", "b"], "text": ["hello", "world"]})
    write_parquet(df, f"{root}/data/corpus.parquet")
    pd.testing.assert_frame_equal(read_parquet(f"{root}/data/corpus.parquet"), df)
    write_json({"rows": 2, "name": "corpus"}, f"{root}/metrics/x.json")
    assert read_json(f"{root}/metrics/x.json") == {"rows": 2, "name": "corpus"}
    assert exists(f"{root}/data/corpus.parquet")
    assert not exists(f"{root}/data/missing.parquet")


def test_atomic_write_leaves_no_temporary_objects(root):
    for i in range(3):
        write_json({"i": i}, f"{root}/state.json")
    fs, path = filesystem(root)
    names = [name.rsplit("/", 1)[-1] for name in fs.ls(path)]
    assert names == ["state.json"]
    assert read_json(f"{root}/state.json") == {"i": 2}


def test_replace_dir_and_content_digest(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("one")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "stale.txt").write_text("old")
    replace_dir(src, dst)
    assert sorted(p.name for p in dst.iterdir()) == ["a.txt"]
    assert content_digest(src) == content_digest(dst)
    (dst / "a.txt").write_text("two")
    assert content_digest(src) != content_digest(dst)
