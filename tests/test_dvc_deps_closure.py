"""Each dvc.yaml stage depends on all the project code its `k2 stage NAME` command runs (so DVC reruns it when that
code changes) and on no project code it does not run. The code is found statically (tests/import_closure.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows import layout
from tests.conftest import REPO
from tests.import_closure import PACKAGES, Closure, Project, covering_deps, stage_closure


@pytest.fixture(scope="module")
def project() -> Project:
    return Project(REPO)


@pytest.fixture(scope="module")
def closures(project: Project) -> dict[str, Closure]:
    return {stage: stage_closure(project, stage) for stage in layout.STAGES}


def _deps() -> dict[str, list[str]]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage["deps"] for name, stage in stages.items()}


def _covers(dep: str, path: str) -> bool:
    return path == dep or path.startswith(dep.rstrip("/") + "/")


def _missing(closure: Closure, deps: list[str]) -> list[str]:
    needed = sorted(p.relative_to(REPO).as_posix() for p in closure.needed)
    return [f"{path} (via {closure.why(REPO / path)})" for path in needed if not any(_covers(d, path) for d in deps)]


def _is_code(dep: str) -> bool:
    return dep.split("/")[0] in PACKAGES


def test_every_stage_depends_on_the_code_it_runs(project, closures):
    deps = _deps()
    problems = {stage: _missing(closures[stage], deps[stage]) for stage in layout.STAGES}
    problems = {stage: missing for stage, missing in problems.items() if missing}
    assert not problems, "dvc.yaml deps miss code the stage runs:\n" + "\n".join(
        f"{stage}: " + "\n    ".join(missing) + f"\n  its code deps should be: {covering_deps(project, closures[stage].needed)}"
        for stage, missing in problems.items())


def test_no_stage_depends_on_code_it_does_not_run(closures):
    deps = _deps()
    unused = {stage: [d for d in deps[stage] if _is_code(d)
                      and not any(_covers(d, p.relative_to(REPO).as_posix()) for p in closures[stage].needed)]
              for stage in layout.STAGES}
    unused = {stage: found for stage, found in unused.items() if found}
    assert not unused, f"dvc.yaml deps name code the stage never runs (it would rerun needlessly): {unused}"


def test_kernel_sources_are_derived_and_a_missing_dep_is_caught(project, closures):
    """The sources build.py compiles (and the headers they include) are needed by the training stages; dropping
    k2core/kernels from pretrain's deps is reported, naming the file and why."""
    from k2core.kernels import build

    compiled = {build.CSRC / name for names in build._SOURCES.values() for name in names}
    headers = set(build.CSRC.glob("*.h"))
    assert compiled | headers <= closures["pretrain"].needed
    deps = [d for d in _deps()["pretrain"] if not d.startswith("k2core/kernels")]
    missing = _missing(closures["pretrain"], deps)
    assert any(line.startswith("k2core/kernels/csrc/max_logit_cuda.cu (via k2core.kernels.build") for line in missing)
    assert any(line.startswith("k2core/kernels/csrc/cpu_common.h (via ") for line in missing)


_IMPORTED = """
import json, sys
from flows import cli, layout
from k2core.config import SECTIONS
import importlib
stage = sys.argv[1]
cli.build_parser().parse_args(["stage", stage])
importlib.import_module(f"flows.{stage}")
for section in layout.STAGE_SECTIONS[stage]:
    importlib.import_module(SECTIONS[section].split(":")[0])
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("stage", layout.STAGES)
def test_static_closure_holds_every_module_the_stage_imports(project, closures, stage):
    """What Python really imports for the stage's flow module and config classes (module-level imports only) is a
    subset of what the static closure finds; this keeps the analysis honest."""
    out = subprocess.run([sys.executable, "-c", _IMPORTED, stage], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    imported = {project.paths[m] for m in json.loads(out) if m in project.paths}
    assert imported, "no project module imported"
    assert not imported - closures[stage].needed, sorted(str(p.relative_to(REPO)) for p in imported - closures[stage].needed)
