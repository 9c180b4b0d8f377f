"""The bf16 autocast knob: native-bf16 detection from the CPU flags and how "auto" resolves per device."""

from pathlib import Path

import pytest

from k2core.train import precision
from k2core.train.config import PretrainConfig
from k2core.train.loop import deepspeed_config

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\nbugs\t\t: none\n")
    assert precision.cpu_flags(info) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert precision.cpu_flags(tmp_path / "missing") is None


@pytest.mark.parametrize(("flags", "native"), [({"avx2", "avx512f"}, False), ({"avx512_bf16"}, True),
                                               ({"amx_bf16"}, True)])
def test_auto_follows_native_cpu_bf16(monkeypatch, flags, native):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    precision.cpu_has_bf16.cache_clear()
    try:
        assert precision.cpu_has_bf16() is native
        assert precision.use_bf16("auto", "cpu") is native
        assert precision.use_bf16("auto", "cuda") is True
        assert precision.use_bf16("off", "cuda") is False
        assert precision.use_bf16("bf16", "cpu") is True
    finally:
        precision.cpu_has_bf16.cache_clear()


def test_the_knob_reaches_the_engine_config(monkeypatch):
    from k2core.config import load_params

    cfg = load_params(ROOT / "params.yaml", profile="tiny").section("pretrain")
    assert isinstance(cfg, PretrainConfig) and cfg.autocast == "auto"
    assert "torch_autocast" in deepspeed_config(cfg.model_copy(update={"autocast": "bf16"}))
    assert "torch_autocast" not in deepspeed_config(cfg.model_copy(update={"autocast": "off"}))
    monkeypatch.setattr("k2core.train.loop.use_bf16", lambda setting: setting == "auto")
    assert "torch_autocast" in deepspeed_config(cfg)
    with pytest.raises(ValueError, match="autocast"):
        PretrainConfig(**{**cfg.model_dump(), "autocast": "fp16"})
