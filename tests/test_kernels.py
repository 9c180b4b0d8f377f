"""Max-logit kernels: the C++ kernel equals the pure-torch reference, the CUDA source compiles for sm_80/sm_90, a
failed build falls back to the reference with exactly one warning, and the fused CPU attention forward returns the
reference's output and max logit in one pass."""

import shutil
import subprocess
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from k2core.kernels import (KernelBuildWarning, attention_max_logit, attention_max_logit_reference, backend, build,
                            max_logit, max_logit_mla, max_logit_reference)
from k2core.model import K2Config, K2ForCausalLM, max_logits
from k2core.model.layers import rope_cos_sin

NO_CPP = build.missing_tool("cpp")


def _qk(batch, heads, seq, dim, shared=False, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, seq, dim, generator=g).to(dtype)
    k = torch.randn(batch, 1 if shared else heads, seq, dim, generator=g).to(dtype)
    return q, k


def _close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-4)


@pytest.fixture
def cpp():
    """The real C++ extension; tools missing -> skip, tools present but build failing -> test failure."""
    if NO_CPP:
        pytest.skip(f"C++ extension cannot build here: {NO_CPP}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", KernelBuildWarning)
        assert backend("cpu") == "cpp"


@pytest.mark.parametrize(("batch", "heads", "seq", "dim", "shared", "dtype", "scale"), [
    (1, 1, 1, 8, False, torch.float32, 0.125),      # one token
    (2, 3, 7, 24, False, torch.float32, 0.3),       # odd length, shorter than a tile
    (3, 2, 49, 40, True, torch.float32, 0.2),       # one past a query tile, shared key
    (2, 4, 130, 48, False, torch.bfloat16, 0.144),  # several tiles, bf16
    (1, 32, 65, 16, True, torch.bfloat16, 0.25),    # many heads, shared key, bf16
    (2, 2, 97, 33, False, torch.float32, -0.5),     # odd width, negative scale
])
def test_cpu_kernel_matches_reference(cpp, batch, heads, seq, dim, shared, dtype, scale):
    q, k = _qk(batch, heads, seq, dim, shared, dtype)
    out = max_logit(q, k, scale)
    assert out.dtype == torch.float32 and out.shape == (heads,)
    _close(out, max_logit_reference([(q, k)], scale))


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), heads=st.integers(1, 6), seq=st.integers(1, 70), dim=st.integers(1, 40),
       shared=st.booleans(), bf16=st.booleans(), seed=st.integers(0, 2**16))
def test_cpu_kernel_matches_reference_on_random_shapes(batch, heads, seq, dim, shared, bf16, seed):
    if NO_CPP:
        pytest.skip(f"C++ extension cannot build here: {NO_CPP}")
    assert backend("cpu") == "cpp"
    q, k = _qk(batch, heads, seq, dim, shared, torch.bfloat16 if bf16 else torch.float32, seed)
    _close(max_logit(q, k, 0.3), max_logit_reference([(q, k)], 0.3))


def test_several_threads_agree_with_one(cpp):
    q, k = _qk(3, 5, 150, 24, seed=3)
    mask = torch.rand(3, 150, generator=torch.Generator().manual_seed(4)) > 0.2
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        threaded = max_logit(q, k, 0.4, key_mask=mask)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(threaded, max_logit(q, k, 0.4, key_mask=mask))  # max is order-free: bitwise equal


def test_reference_is_the_masked_max_of_materialised_logits():
    q, k = _qk(2, 3, 11, 8, shared=True)
    logits = (q @ k.transpose(-1, -2)) * 0.7
    causal = torch.ones(11, 11, dtype=torch.bool).tril()
    expected = logits.masked_fill(~causal, float("-inf")).amax(dim=(0, 2, 3))
    _close(max_logit_reference([(q, k)], 0.7), expected)
    _close(max_logit_reference([(q, k)], 0.7, chunk_elements=1), expected)  # one query row at a time


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mla_split_form_equals_concatenated_heads(cpp, dtype):
    q_nope, k_nope = _qk(2, 4, 37, 24, dtype=dtype, seed=1)
    q_rope, k_rope = _qk(2, 4, 37, 8, shared=True, dtype=dtype, seed=2)
    q = torch.cat([q_nope, q_rope], dim=-1)
    k = torch.cat([k_nope, k_rope.expand(-1, 4, -1, -1)], dim=-1)
    expected = max_logit_reference([(q, k)], 0.2)
    _close(max_logit_mla(q_nope, q_rope, k_nope, k_rope, 0.2), expected)
    _close(max_logit_reference([(q_nope, k_nope), (q_rope, k_rope)], 0.2), expected)
    _close(max_logit(q, k, 0.2), expected)


def test_strided_views_need_no_copy_to_be_right(cpp):
    # [B, T, H, D] storage viewed as [B, H, T, D], then split along D: the layout MLA's projection produces.
    qkv = torch.randn(2, 29, 3, 40)
    q = qkv.transpose(1, 2)
    q_nope, q_rope = q.split([32, 8], dim=-1)
    k_nope, k_rope = torch.randn(2, 3, 29, 32), torch.randn(2, 1, 29, 8)
    expected = max_logit_reference([(q_nope.contiguous(), k_nope), (q_rope.contiguous(), k_rope)], 0.3)
    _close(max_logit_mla(q_nope, q_rope, k_nope, k_rope, 0.3), expected)
    _close(max_logit(q_rope, k_rope.expand(-1, 3, -1, -1), 0.3), max_logit_reference([(q_rope, k_rope)], 0.3))


def test_key_mask_drops_padded_keys(cpp):
    q, k = _qk(3, 2, 20, 16)
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[0, :5] = False  # left padding
    mask[1, 12:] = False  # right padding
    mask[2] = False  # nothing to attend to in this row
    expected = max_logit_reference([(q, k)], 0.5, key_mask=mask)
    _close(max_logit(q, k, 0.5, key_mask=mask), expected)
    _close(max_logit(q, k, 0.5, key_mask=mask.int()), expected)
    assert torch.isinf(max_logit(q, k, 0.5, key_mask=torch.zeros(3, 20, dtype=torch.bool))).all()


@pytest.mark.parametrize("shape", [(0, 3, 5, 4), (2, 3, 0, 4)])
def test_empty_batch_or_sequence_gives_minus_inf(cpp, shape):
    q = torch.randn(shape)
    for out in (max_logit(q, q, 1.0), max_logit_reference([(q, q)], 1.0)):
        assert out.shape == (3,) and torch.isinf(out).all() and (out < 0).all()


def test_no_heads_gives_an_empty_result(cpp):
    q = torch.randn(2, 0, 5, 4)
    assert max_logit(q, q, 1.0).shape == (0,)


@pytest.mark.parametrize("seq", [4, 100])  # within one register block, and rows whose blocks are fully visible
def test_infinite_and_nan_logits_propagate_like_amax(cpp, seq):
    q = torch.ones(1, 3, seq, 1)
    k = torch.ones(1, 3, seq, 1)
    q[0, 0] = float("-inf")  # every logit of head 0 is -inf
    q[0, 1, seq - 2] = float("nan")  # one row of NaN logits in head 1
    q[0, 2, seq - 1] = float("inf")  # +inf in head 2
    out = max_logit(q, k, 1.0)
    assert out[0] == float("-inf") and out[1].isnan() and out[2] == float("inf")
    torch.testing.assert_close(out, max_logit_reference([(q, k)], 1.0), equal_nan=True)


def test_other_dtypes_and_grad_inputs_are_accepted(cpp):
    q, k = _qk(2, 2, 9, 8)
    half = max_logit(q.half(), k.half(), 0.5)
    _close(half, max_logit_reference([(q.half(), k.half())], 0.5))
    mixed = max_logit_mla(q, q.bfloat16(), k, k.bfloat16(), 0.5)
    _close(mixed, max_logit_reference([(q, k), (q.bfloat16(), k.bfloat16())], 0.5))
    out = max_logit(q.requires_grad_(), k, 0.5)
    assert not out.requires_grad


@pytest.mark.parametrize(("q_shape", "k_shape"), [
    ((2, 3, 5), (2, 3, 5, 4)),  # q not 4-D
    ((2, 3, 5, 4), (2, 2, 5, 4)),  # k heads neither H nor 1
    ((2, 3, 5, 4), (2, 3, 6, 4)),  # lengths differ
    ((2, 3, 5, 4), (2, 3, 5, 8)),  # widths differ
])
def test_bad_shapes_are_rejected(q_shape, k_shape):
    with pytest.raises(ValueError):
        max_logit(torch.randn(q_shape), torch.randn(k_shape), 1.0)


def test_kernel_reproduces_the_models_recorded_smax(cpp):
    """The drop-in check: on a tiny K2 layer the kernel on the split q/k equals the S_max the model records."""
    torch.manual_seed(0)
    config = K2Config.preset("tiny", num_hidden_layers=1, first_k_dense_replace=1)
    model = K2ForCausalLM(config).train()
    ids = torch.randint(0, config.vocab_size, (2, 33))
    model(ids)
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        hidden = model.model.layers[0].input_layernorm(model.model.embed_tokens(ids))
        positions = torch.arange(33)[None].expand(2, -1)
        cos, sin = rope_cos_sin(positions, config.qk_rope_head_dim, config.rope_theta, hidden.dtype)
        q, k, _, _ = attn.project(hidden, cos, sin, None)
    q_nope, q_rope = q.split([attn.nope_dim, attn.rope_dim], dim=-1)
    k_nope, k_rope = k.split([attn.nope_dim, attn.rope_dim], dim=-1)
    _close(max_logit_mla(q_nope, q_rope, k_nope, k_rope[:, :1], attn.scale), max_logits(model)[0])


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cuda_source_compiles_without_torch(tmp_path, arch):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH: the CUDA kernel is only compile-checked where a CUDA toolkit exists")
    source = build.CSRC / "max_logit_cuda.cu"
    result = subprocess.run([nvcc, "-c", f"-arch={arch}", "-O3", str(source), "-o", str(tmp_path / "k.o")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "k.o").stat().st_size > 0


def test_failed_build_falls_back_with_exactly_one_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(build, "_ops", {})  # forget this process's loaded extension
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    q, k = _qk(2, 3, 10, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = max_logit(q, k, 0.5)
        second = max_logit_mla(q, q, k, k, 0.5)
        assert backend("cpu") == "torch"
    messages = [str(w.message) for w in caught if issubclass(w.category, KernelBuildWarning)]
    assert len(messages) == 1
    assert "no-such-c++-compiler" in messages[0] and "pure-torch reference" in messages[0]
    assert "install a C++17 compiler" in messages[0] and "K2_KERNELS=torch" in messages[0]
    _close(first, max_logit_reference([(q, k)], 0.5))
    _close(second, max_logit_reference([(q, k), (q, k)], 0.5))


def test_a_compiler_that_fails_falls_back_too(monkeypatch, tmp_path):
    if shutil.which("false") is None:
        pytest.skip("needs the `false` command as a compiler that always fails")
    monkeypatch.setattr(build, "_ops", {})
    monkeypatch.setenv("CXX", "false")
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    q, k = _qk(1, 2, 6, 4)
    with pytest.warns(KernelBuildWarning, match="could not be built"):
        out = max_logit(q, k, 1.0)
    _close(out, max_logit_reference([(q, k)], 1.0))


def test_a_compiler_error_is_reported_as_its_first_line(monkeypatch):
    def broken(kind):
        raise RuntimeError("Error building extension 'k2_max_logit_cpp'\n[1/3] c++ ... (long compiler log)")

    monkeypatch.setattr(build, "_ops", {})
    monkeypatch.setattr(build, "compile_extension", broken)
    with pytest.warns(KernelBuildWarning, match="Error building extension 'k2_max_logit_cpp'\\)") as caught:
        assert build.kernel_op("cpp") is None
    assert "long compiler log" not in str(caught[0].message)


def test_forcing_the_reference_skips_the_build_silently(monkeypatch):
    monkeypatch.setattr(build, "_ops", {})
    monkeypatch.setenv(build.FORCE_TORCH_ENV, "torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend("cpu") == "torch"
        q, k = _qk(1, 2, 5, 4)
        _close(max_logit(q, k, 1.0), max_logit_reference([(q, k)], 1.0))


def test_builds_are_cached_per_user_and_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    directory = build.build_directory("cpp")
    assert directory.parent.parent == tmp_path
    assert torch.__version__ in directory.parent.name and directory.name == "k2_max_logit_cpp"
    monkeypatch.delenv(build.CACHE_ENV)
    assert str(build.build_directory("cuda")).startswith(str(build.cache_root()))


def _qkv(batch, heads, seq, dim, v_dim, shared=False, dtype=torch.float32, seed=0):
    q, k = _qk(batch, heads, seq, dim, shared, dtype, seed)
    g = torch.Generator().manual_seed(seed + 1)
    return q, k, torch.randn(batch, k.shape[1], seq, v_dim, generator=g).to(dtype)


@pytest.mark.parametrize(("batch", "heads", "seq", "dim", "v_dim", "shared", "dtype", "masked"), [
    (1, 1, 1, 8, 8, False, torch.float32, False),      # one token
    (2, 3, 7, 24, 8, False, torch.float32, True),      # odd length, narrower values, key mask
    (2, 2, 97, 48, 32, True, torch.float32, False),    # one past two query blocks, shared k/v (MQA)
    (3, 2, 130, 40, 40, False, torch.float32, True),   # several key tiles, masked
    (2, 4, 130, 48, 48, False, torch.bfloat16, True),  # bf16
    (1, 16, 65, 16, 24, True, torch.bfloat16, False),  # many heads, value width not a multiple of 16
])
def test_fused_attention_matches_reference(cpp, batch, heads, seq, dim, v_dim, shared, dtype, masked):
    q, k, v = _qkv(batch, heads, seq, dim, v_dim, shared, dtype)
    key_mask = torch.rand(batch, seq, generator=torch.Generator().manual_seed(3)) > 0.3 if masked else None
    out, best = attention_max_logit(q, k, v, 0.2, key_mask)
    expected_out, expected_best = attention_max_logit_reference(q, k, v, 0.2, key_mask)
    assert out.dtype == dtype and out.shape == (batch, heads, seq, v_dim)
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1.6e-2, "atol": 1e-2}
    torch.testing.assert_close(out.float(), expected_out, **tolerance)
    _close(best, expected_best)
    _close(best, max_logit(q, k, 0.2, key_mask))  # the one-pass S_max is the separate kernel's


def test_fused_attention_equals_sdpa_and_zeroes_queries_that_see_no_key(cpp):
    q, k, v = _qkv(2, 4, 70, 32, 32)
    out, _ = attention_max_logit(q, k, v, 0.25)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.25),
                               rtol=1e-5, atol=1e-5)
    left_padded = torch.ones(2, 70, dtype=torch.bool)
    left_padded[1, :5] = False
    out, _ = attention_max_logit(q, k, v, 0.25, left_padded)
    assert torch.equal(out[1, :, :5], torch.zeros(4, 5, 32))
    assert out[1, :, 5:].abs().sum(dim=-1).min() > 0


def test_fused_attention_propagates_nan_and_rejects_bad_values(cpp):
    q, k, v = _qkv(1, 2, 9, 8, 8)
    q[0, 1, 4, 0] = float("nan")
    _, best = attention_max_logit(q, k, v, 1.0)
    assert not torch.isnan(best[0]) and torch.isnan(best[1])
    with pytest.raises(ValueError, match="v must be"):
        attention_max_logit(q, k, v[:, :1], 1.0)


def test_fused_attention_falls_back_to_the_reference_when_forced(monkeypatch):
    monkeypatch.setenv(build.FORCE_TORCH_ENV, "torch")
    q, k, v = _qkv(2, 3, 11, 8, 4, shared=True)
    out, best = attention_max_logit(q, k, v, 0.5)
    expected_out, expected_best = attention_max_logit_reference(q, k, v, 0.5)
    assert torch.equal(out, expected_out) and torch.equal(best, expected_best)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), heads=st.integers(1, 5), seq=st.integers(1, 150), dim=st.integers(1, 40),
       v_dim=st.integers(1, 40), shared=st.booleans(), masked=st.booleans(), seed=st.integers(0, 2**16))
def test_fused_attention_matches_reference_on_random_shapes(batch, heads, seq, dim, v_dim, shared, masked, seed):
    if NO_CPP:
        pytest.skip(f"C++ extension cannot build here: {NO_CPP}")
    assert backend("cpu") == "cpp"
    q, k, v = _qkv(batch, heads, seq, dim, v_dim, shared, seed=seed)
    key_mask = torch.rand(batch, seq, generator=torch.Generator().manual_seed(seed)) > 0.5 if masked else None
    out, best = attention_max_logit(q, k, v, 0.3, key_mask)
    expected_out, expected_best = attention_max_logit_reference(q, k, v, 0.3, key_mask)
    torch.testing.assert_close(out, expected_out, rtol=1e-5, atol=1e-5)
    _close(best, expected_best)


def test_fused_attention_threads_agree_with_one(cpp):
    q, k, v = _qkv(2, 3, 150, 16, 16)
    torch.set_num_threads(1)
    one = attention_max_logit(q, k, v, 0.3)
    torch.set_num_threads(2)
    try:
        two = attention_max_logit(q, k, v, 0.3)
    finally:
        torch.set_num_threads(1)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_a_lock_left_by_a_killed_build_is_cleared_and_a_live_builder_is_waited_for(tmp_path):
    """torch's build lock is a plain file a killed builder leaves behind (every later build would wait forever);
    ours is an flock the kernel drops with its holder."""
    import sys
    import time

    from k2core.kernels.build import exclusive_build

    (tmp_path / "lock").write_text("")  # what a build killed by SIGKILL leaves
    with exclusive_build(tmp_path):
        assert not (tmp_path / "lock").exists()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from k2core.kernels.build import "
         "exclusive_build\nwith exclusive_build(Path(sys.argv[1])):\n    (Path(sys.argv[1]) / 'lock').write_text('')\n"
         "    print('building', flush=True); time.sleep(3)", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "building"
        started = time.monotonic()
        with exclusive_build(tmp_path):  # waits for the live builder instead of stealing its lock
            waited = time.monotonic() - started
        assert holder.wait(10) == 0 and waited > 1.0
    finally:
        holder.kill()


def test_the_build_compiles_a_content_named_copy_of_the_sources(monkeypatch, tmp_path):
    """Two copies of the repository with the same sources build once (torch's build files name absolute paths)."""
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    first = build.sources_snapshot(tmp_path)
    assert build.sources_snapshot(tmp_path) == first and first.name.startswith("csrc-")
    assert sorted(p.name for p in first.iterdir()) == sorted(p.name for p in build.CSRC.iterdir() if p.is_file())
    copy = tmp_path / "other-checkout" / "csrc"
    shutil.copytree(build.CSRC, copy)
    monkeypatch.setattr(build, "CSRC", copy)
    assert build.sources_snapshot(tmp_path) == first  # same bytes elsewhere: same snapshot, no rebuild
    (copy / "max_logit.h").write_text((copy / "max_logit.h").read_text() + "\n// changed\n")
    assert build.sources_snapshot(tmp_path) != first  # changed sources: a new snapshot, a new build
