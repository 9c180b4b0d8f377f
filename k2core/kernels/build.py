"""Just-in-time build of the max-logit extensions, DeepSpeed-op style: compiled on first use through
``torch.utils.cpp_extension.load``, cached on disk per user, loaded once per process.

When a build fails the caller gets ``None`` and the pure-torch reference runs instead; the reason and the fix are
reported in exactly one :class:`KernelBuildWarning` per extension and process.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch

Kind = Literal["cpp", "cuda"]
KernelOp = Callable[..., None]

CSRC = Path(__file__).with_name("csrc")
_SOURCES: dict[Kind, tuple[str, ...]] = {
    "cpp": ("max_logit_cpu.cpp", "attention_cpu.cpp", "bind_cpu.cpp"),
    "cuda": ("max_logit_cuda.cu", "bind_cuda.cpp"),
}
_FIX: dict[Kind, str] = {
    "cpp": "install a C++17 compiler with OpenMP (g++ or clang++; $CXX selects one) and ninja (`pip install ninja`)",
    "cuda": "install the CUDA toolkit matching torch.version.cuda and put nvcc on PATH (or set $CUDA_HOME)",
}
# Architectures the CUDA kernel is built for unless $TORCH_CUDA_ARCH_LIST says otherwise (A100, H100/H200; the PTX
# lets newer GPUs JIT it).
CUDA_ARCHS = "8.0;9.0+PTX"
FORCE_TORCH_ENV = "K2_KERNELS"  # "torch": skip the extensions (no build, no warning)
CACHE_ENV = "K2_KERNELS_CACHE"

_ops: dict[Kind, KernelOp | None] = {}
_lock = threading.Lock()


class KernelBuildWarning(UserWarning):
    """A max-logit extension could not be built; the slower pure-torch reference is used instead."""


def cache_root() -> Path:
    """Per-user cache of built extensions: ``$K2_KERNELS_CACHE`` or ``~/.cache/k2/torch_extensions``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "k2" / "torch_extensions"


def build_directory(kind: Kind) -> Path:
    """One folder per Python, torch and CUDA version, so switching environments never reuses a stale binary."""
    cuda = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"
    tag = f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__}_{cuda}"
    return cache_root() / tag / f"k2_max_logit_{kind}"


def sources_snapshot(cache: Path) -> Path:
    """The csrc folder copied to a cache folder named by its content digest, built from there.

    torch's build files record absolute source paths, so compiling `CSRC` itself would rebuild the extension
    (minutes on 2 cores, under a lock every other process waits on) whenever the same sources are reached through
    another copy of the repository: the pipeline's test workspaces, a fresh clone, a DVC experiment folder.
    """
    files = sorted(path for path in CSRC.iterdir() if path.is_file())
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    snapshot = cache / f"csrc-{digest.hexdigest()[:16]}"
    if not snapshot.is_dir():
        staging = cache / f".{snapshot.name}.{os.getpid()}.tmp"
        shutil.copytree(CSRC, staging, dirs_exist_ok=True)
        try:
            staging.rename(snapshot)
        except OSError:  # another process put the same snapshot in place first
            shutil.rmtree(staging, ignore_errors=True)
    return snapshot


def missing_tool(kind: Kind) -> str | None:
    """A short reason when a tool the build needs is absent (clearer than the compiler's own failure)."""
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler: {compiler!r} is not on PATH"
    if not cpp_extension.is_ninja_available():
        return "ninja is not installed"
    if kind == "cuda" and cpp_extension.CUDA_HOME is None:
        return "no CUDA toolkit found (nvcc not on PATH and $CUDA_HOME unset)"
    return None


@contextmanager
def exclusive_build(directory: Path) -> Iterator[None]:
    """Hold an flock on the build folder while torch builds there, and clear a lock torch left behind.

    torch's own build lock is a plain file (`lock`) that a builder killed mid-build never removes; every later
    build then waits on it forever. The kernel releases an flock when its holder dies, however it dies, so a
    `lock` file found while holding ours belongs to a dead builder and is removed.
    """
    import fcntl

    with open(directory / "k2-build.flock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (directory / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _default_cuda_archs() -> Iterator[None]:
    """Build for CUDA_ARCHS unless the user chose architectures; the environment is restored afterwards."""
    chosen = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if chosen is None:
        os.environ["TORCH_CUDA_ARCH_LIST"] = CUDA_ARCHS
    try:
        yield
    finally:
        if chosen is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)


def compile_extension(kind: Kind) -> KernelOp:
    """Build (or reuse from the cache) and load one extension; returns its torch op. Raises when that fails."""
    from torch.utils import cpp_extension

    reason = missing_tool(kind)
    if reason is not None:
        raise RuntimeError(reason)
    directory = build_directory(kind)
    directory.mkdir(parents=True, exist_ok=True)
    sources = sources_snapshot(directory.parent)
    with exclusive_build(directory), _default_cuda_archs():
        cpp_extension.load(
            name=f"k2_max_logit_{kind}",
            sources=[str(sources / name) for name in _SOURCES[kind]],
            extra_cflags=["-O3", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            extra_cuda_cflags=["-O3"],
            extra_include_paths=[str(sources)],
            build_directory=str(directory),
            with_cuda=kind == "cuda",
            is_python_module=False,
            verbose=False,
        )
    return getattr(torch.ops.k2_kernels, "max_logit_cpu" if kind == "cpp" else "max_logit_cuda")


def _short(exc: BaseException) -> str:
    """First line of an exception (build errors carry the whole compiler log)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def kernel_op(kind: Kind) -> KernelOp | None:
    """The extension's op, built on first call; None (after one warning) when it cannot be built or is disabled."""
    if os.environ.get(FORCE_TORCH_ENV) == "torch":
        return None
    with _lock:
        if kind not in _ops:
            try:
                _ops[kind] = compile_extension(kind)
            except Exception as exc:  # any build failure degrades to the reference, never breaks training
                _ops[kind] = None
                warnings.warn(
                    f"k2core.kernels: the {kind} max-logit extension could not be built ({_short(exc)}); using the "
                    f"pure-torch reference instead (same results, slower). To fix: {_FIX[kind]}; the build is "
                    f"cached in {build_directory(kind)}. Set {FORCE_TORCH_ENV}=torch to use the reference without "
                    "this warning.",
                    KernelBuildWarning,
                    stacklevel=4,
                )
        return _ops[kind]
