"""Storage on local disk and on S3 (a real S3 protocol server: moto on 127.0.0.1)."""

import pandas as pd
import pytest

from k2core.storage import content_digest, exists, filesystem, read_json, read_parquet, replace_dir, write_json, write_parquet
from tests.s3_testing import CREDENTIALS, moto_server


@pytest.fixture(scope="module")
def s3_bucket():
    with pytest.MonkeyPatch.context() as patch, moto_server() as (host, port):
        for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
            patch.setenv(key, value)
        fs, _ = filesystem("s3://k2-test-bucket")
        fs.mkdir("k2-test-bucket")
        yield "s3://k2-test-bucket"


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


def _version(folder, v: int) -> None:
    """A folder whose three files all say which version they belong to (a reader can tell a mix or a gap)."""
    folder.mkdir()
    for name, repeat in (("a.txt", 1), ("b.bin", 4096), ("c.json", 16)):
        (folder / name).write_text(f"{v:06d}" * repeat)


def test_replace_dir_first_publish_and_leftover_staging(tmp_path):
    _version(tmp_path / "v1", 1)
    dst = tmp_path / "out" / "ckpt"
    replace_dir(tmp_path / "v1", dst)  # dst and its parent do not exist yet
    assert (dst / "a.txt").read_text() == "000001"
    leftover = dst.with_name(".ckpt.staging")  # what a writer killed mid-copy or mid-delete leaves
    leftover.mkdir()
    (leftover / "half.bin").write_bytes(b"\0" * 10)
    _version(tmp_path / "v2", 2)
    replace_dir(tmp_path / "v2", dst, prepare=lambda staging: (staging / "extra.txt").write_text("added"))
    assert sorted(p.name for p in dst.iterdir()) == ["a.txt", "b.bin", "c.json", "extra.txt"]
    assert (dst / "b.bin").read_text() == "000002" * 4096
    assert sorted(p.name for p in dst.parent.iterdir()) == ["ckpt"]  # staging and the old folder are gone


_READER = r"""
import json, os, sys
dst, stop, expected = sys.argv[1], sys.argv[2], sorted(["a.txt", "b.bin", "c.json"])
counts = {"polls": 0, "missing": 0, "partial": 0, "retired": 0}
while not os.path.exists(stop):
    counts["polls"] += 1
    try:
        fd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        counts["missing"] += 1
        continue
    try:
        try:
            names = sorted(os.listdir(fd))
            texts = []
            for name in names:
                handle = os.open(name, os.O_RDONLY, dir_fd=fd)
                texts.append(os.read(handle, 1 << 20).decode())
                os.close(handle)
            whole = names == expected and len({t[:6] for t in texts}) == 1 and len(texts[1]) == 6 * 4096
        except FileNotFoundError:
            whole = False
        if not whole:
            # the folder this reader opened was replaced meanwhile (and is being deleted): fine. Still at dst: not.
            try:
                same = os.fstat(fd).st_ino == os.stat(dst).st_ino
            except FileNotFoundError:
                same = False
                counts["missing"] += 1
            counts["partial" if same else "retired"] += 1
    finally:
        os.close(fd)
print(json.dumps(counts))
"""


def test_replace_dir_is_atomic_for_a_concurrent_reader(tmp_path):
    """A reader process polls dst through 300 replacements: dst is never missing, never partial, never a mix."""
    import json
    import subprocess
    import sys
    import time

    dst, stop = tmp_path / "ckpt", tmp_path / "stop"
    _version(tmp_path / "v0", 0)
    replace_dir(tmp_path / "v0", dst)
    reader = subprocess.Popen([sys.executable, "-c", _READER, str(dst), str(stop)], stdout=subprocess.PIPE,
                              text=True)
    try:
        time.sleep(0.3)  # interpreter start-up: let the reader poll before the first replacement
        for v in range(1, 301):
            _version(tmp_path / f"v{v}", v)
            replace_dir(tmp_path / f"v{v}", dst)
        stop.touch()
        counts = json.loads(reader.communicate(timeout=30)[0])
    finally:
        reader.kill()
        reader.wait()
    assert counts["missing"] == 0 and counts["partial"] == 0, counts
    assert counts["polls"] > 300, counts  # the reader really ran through the replacements
    assert (dst / "a.txt").read_text() == "000300"
