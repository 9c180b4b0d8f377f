"""Limits and paths of the code sandbox, typed so a wrong value fails where it is set."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SandboxConfig(BaseModel):
    """One jail's limits. The defaults fit HumanEval-sized programs (a function and its asserts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bwrap: str = Field("bwrap", description="bubblewrap executable (name on PATH or absolute path)")
    python: str = Field("/usr/bin/python3", description="interpreter inside the jail; it must live under /usr")
    wall_time_s: float = Field(10.0, gt=0, description="the whole jail is killed after this long")
    cpu_time_s: int = Field(10, ge=1, description="RLIMIT_CPU of every process in the jail")
    memory_mb: int = Field(512, ge=64, description="RLIMIT_AS (address space) of every process")
    max_output_bytes: int = Field(1_000_000, ge=1024, description="stdout + stderr kept; more kills the jail")
    max_processes: int = Field(32, ge=4, description="RLIMIT_NPROC: processes and threads of the jail's user")
    max_file_mb: int = Field(16, ge=1, description="RLIMIT_FSIZE: the largest file a program may write")
    tmpfs_mb: int = Field(64, ge=1, description="size of the writable work dir (/tmp, a tmpfs)")
    max_open_files: int = Field(256, ge=16, description="RLIMIT_NOFILE")
    uid: int = Field(65534, ge=1, description="unprivileged uid the jail runs as, inside and (when k2 is root) outside")
    gid: int = Field(65534, ge=1, description="its gid")
    parallel: int = Field(2, ge=1, description="how many jails a batch runs at once")
