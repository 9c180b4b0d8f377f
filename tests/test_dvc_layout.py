"""dvc.yaml and flows/layout.py describe the same DAG."""

import yaml

from flows import layout
from tests.conftest import REPO


def _stages():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _paths(entries):
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def test_stages_match_and_run_through_k2():
    stages = _stages()
    assert tuple(stages) == layout.STAGES
    for name, stage in stages.items():
        assert stage["cmd"] == f"k2 stage {name}"
        assert (REPO / f"flows/{name}.py").exists()


def test_params_are_the_sections_each_stage_reads():
    for name, stage in _stages().items():
        expected = ["profile", *(f"{section}.${{profile}}" for section in layout.STAGE_SECTIONS[name])]
        assert stage["params"] == expected


def test_outputs_and_metrics_follow_the_layout():
    stages = _stages()
    assert _paths(stages["synth"]["outs"]) == [str(layout.SYNTH_DIR)]
    assert _paths(stages["validate"]["outs"]) == [str(layout.VALIDATED_DIR), str(layout.QUARANTINE_DIR)]
    assert _paths(stages["tokenizer"]["outs"]) == [str(layout.TOKENIZER_DIR)]
    for name in layout.CHECKPOINT_STAGES:
        outs = stages[name]["outs"]
        assert _paths(outs) == [str(layout.checkpoint_dir(name)), str(layout.resume_dir(name))]
        assert outs[1][str(layout.resume_dir(name))] == {"persist": True, "cache": False}
    for name, stage in stages.items():
        assert _paths(stage["metrics"]) == [str(layout.metrics_path(name))]
    assert stages["bench"]["outs"] == [{str(layout.REPORT_PATH): {"cache": False}}, str(layout.BENCH_SAMPLES_DIR)]


def test_every_dependency_exists_or_is_an_upstream_output():
    stages = _stages()
    produced = set()
    for stage in stages.values():
        for dep in stage["deps"]:
            assert (REPO / dep).exists() or any(dep == out or dep.startswith(out + "/") for out in produced), dep
        produced.update(_paths(stage.get("outs", [])))
