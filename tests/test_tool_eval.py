"""The tool-use evaluation loop: scored with a scripted oracle; any chat backend as the agent through `LLMAgent`
(deterministic backends written here and in the agent tests, the openai backend over a loopback server); and a tiny
random K2 model in memory, as the `k2` backend on its folder and served by `k2 serve`, all giving the same result."""

import json
import random

import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from k2core.agentic.agents import ScriptedAgent, oracle_agent
from k2core.agentic.tasks import generate_tasks, task_to_row
from k2core.chat import (
    BOS, EOS, IM_END, PAD, SPECIAL_TOKENS, TOOL_CALL_ARG_BEGIN, TOOL_CALL_BEGIN, TOOL_CALL_END, TOOL_CALLS_BEGIN,
    TOOL_CALLS_END,
)
from k2core.agentic.domains import make_env
from k2core.agentic.llm_agent import REQUEST_ERROR
from k2core.eval.tool_env import (
    evaluate_agent, evaluate_tool_use, held_out_tasks, pass_hat_k, run_tool_eval, tool_metrics,
)
from k2core.llm import K2LLMConfig, OpenAILLMConfig, RequestError, make_backend
from k2core.llm.server import running_server
from k2core.model import K2Config, K2ForCausalLM
from tests.test_agentic_llm_agent import PlayerModel, Replies, call, env_opening

TINY = dict(
    hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=2, n_routed_experts=4, num_experts_per_tok=2, kv_lora_rank=16, q_lora_rank=16,
    qk_rope_head_dim=8, v_head_dim=8, qk_nope_head_dim=8, max_position_embeddings=8192,
)


@pytest.fixture(scope="module")
def tasks():
    return generate_tasks(["retail", "library"], 8, 1, 3, ["terse", "chatty", "guarded"], 0.5, seed=21)


def oracle(task, env, tools, seed):
    return ScriptedAgent(oracle_agent(env), task, env, random.Random(0))


def test_pass_hat_k():
    assert pass_hat_k([4, 2, 0], 4, 1) == pytest.approx((1 + 0.5 + 0) / 3)
    assert pass_hat_k([4, 2, 0], 4, 2) == pytest.approx((1 + 1 / 6) / 3)
    assert pass_hat_k([4, 2, 0], 4, 4) == pytest.approx(1 / 3)


def test_oracle_scores_full_marks_through_the_eval_loop(tasks):
    result = run_tool_eval(tasks, oracle, max_turns=40, num_trials=2, p_transient=0.2, p_edge=0.1, seed=0)
    assert result["tasks"] == 8 and result["pass^1"] == 1.0 and result["pass^2"] == 1.0
    assert result["tool_calls"] == result["well_formed_tool_calls"] > 0 and result["malformed_tool_calls"] == 0
    assert result["end_reasons"] == {"user_stop": 16}


def test_silent_agent_scores_zero(tasks):
    def silent(task, env, tools, seed):
        return lambda messages: {"role": "assistant", "content": "Done."}

    graded = [t for t in tasks if t.checkpoints or t.outputs]
    result = run_tool_eval(graded, silent, max_turns=10, num_trials=1, p_transient=0.0, p_edge=0.0, seed=0)
    assert result["pass^1"] == 0.0 and result["tool_calls"] == 0


def test_max_turns_ends_episodes(tasks):
    result = run_tool_eval(tasks[:2], oracle, max_turns=1, num_trials=1, p_transient=0.0, p_edge=0.0, seed=0)
    assert result["end_reasons"] == {"max_turns": 2} and result["pass^1"] == 0.0


@pytest.fixture(scope="module")
def tokenizer(tasks):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([t.instruction for t in tasks] * 2, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return K2ForCausalLM(K2Config.preset("tiny", vocab_size=len(tokenizer), **TINY))


def test_tiny_random_model_runs_the_loop(tasks, tokenizer, model):
    tasks_df = pd.DataFrame([task_to_row(t) for t in tasks])
    result = evaluate_tool_use(model, tokenizer, tasks_df, max_turns=3, max_new_tokens=8, max_tasks=2)
    assert result["tasks"] == 2 == len(held_out_tasks(tasks_df, 2))
    assert sum(result["end_reasons"].values()) == 2 and result["mean_turns"] >= 1
    assert result["pass^1"] == 0.0
    assert result["well_formed_tool_calls"] <= result["tool_calls"]


def test_generated_tool_calls_are_parsed_executed_and_counted(tasks, tokenizer, model, monkeypatch):
    """Stand in for the sampler with fixed turns to check decode, parse, execution and the counters."""
    task = held_out_tasks(pd.DataFrame([task_to_row(t) for t in tasks]), 1)[0]
    email = task.identity["email"]
    good = f'{TOOL_CALLS_BEGIN}{TOOL_CALL_BEGIN}functions.{task.plan[0].name}:0{TOOL_CALL_ARG_BEGIN}{{"email": "{email}"}}{TOOL_CALL_END}'
    unknown = f'{TOOL_CALL_BEGIN}functions.delete_everything:1{TOOL_CALL_ARG_BEGIN}{{}}{TOOL_CALL_END}{TOOL_CALLS_END}{IM_END}'
    bad_json = f"{TOOL_CALLS_BEGIN}{TOOL_CALL_BEGIN}functions.{task.plan[0].name}:0{TOOL_CALL_ARG_BEGIN}{{oops{TOOL_CALL_END}{TOOL_CALLS_END}{IM_END}"
    turns = iter([good + unknown, bad_json, f"All done.{IM_END}"] + [f"Bye.{IM_END}"] * 10)
    seen_prompts = []

    def fake_generate(model, prompt_ids, num_samples, max_new_tokens, temperature, eos_token_ids, **kw):
        seen_prompts.append(tokenizer.decode(prompt_ids, skip_special_tokens=False))
        return [tokenizer.encode(next(turns), add_special_tokens=False)]

    monkeypatch.setattr("k2core.llm.k2_checkpoint.generate", fake_generate)
    frame = pd.DataFrame([task_to_row(task)])
    result = evaluate_tool_use(model, tokenizer, frame, max_turns=6, max_new_tokens=8)
    assert result["tool_calls"] == 1 == result["well_formed_tool_calls"] and result["malformed_tool_calls"] == 2
    assert "## Return of functions." in seen_prompts[1]
    assert '"user_id"' in seen_prompts[1] or '"member_id"' in seen_prompts[1]
    assert result["pass^1"] == 0.0


def test_tool_metrics_are_prefixed_without_carets():
    assert tool_metrics({"pass^1": 0.5, "tool_calls": 3}) == {"tool_pass1": 0.5, "tool_tool_calls": 3}


@pytest.fixture(scope="module")
def open_tasks():
    """Tasks whose users open with the whole request, so a test model can tell which task it is in."""
    return generate_tasks(["retail", "library"], 8, 1, 3, ["terse", "chatty"], 0.5, seed=21)


def player(tasks):
    return PlayerModel([(env_opening(t, t.persona), ("env", t)) for t in tasks])


def test_a_chat_backend_plays_through_the_llm_agent_and_the_wire_changes_nothing(open_tasks, monkeypatch):
    frame = pd.DataFrame([task_to_row(t) for t in open_tasks])
    held = held_out_tasks(frame, None)
    settings = dict(max_turns=40, max_tokens=64, num_trials=2, p_transient=0.2, p_edge=0.1)
    model = player(held)
    direct = evaluate_agent(model, frame, **settings)
    assert direct["tasks"] == len(held) > 0 and direct["pass^1"] == direct["pass^2"] == 1.0
    assert direct["tool_calls"] == direct["well_formed_tool_calls"] == model.calls > 0
    assert direct["malformed_tool_calls"] == 0 and direct["end_reasons"] == {"user_stop": 2 * len(held)}
    served_model = player(held)
    with running_server(served_model, "player") as server:
        monkeypatch.setenv("K2_TEST_LLM_URL", server.url)
        remote = make_backend(OpenAILLMConfig(kind="openai", model="player", base_url_env="K2_TEST_LLM_URL", max_retries=0))
        served = evaluate_agent(remote, frame, **settings)
    assert served == direct and served_model.requests == model.requests


def test_calls_are_counted_and_a_refused_request_fails_the_episode(tasks):
    frame = pd.DataFrame([task_to_row(t) for t in tasks])
    task = held_out_tasks(frame, 1)[0]
    identify = make_env(task.env).identify_tool
    email = task.identity["email"]
    backend = Replies([call("delete_everything", "{}"), call(identify, "{email: oops"), call(identify, json.dumps({"email": 5})),
                       call(identify, json.dumps({"email": email})), RequestError("prompt too long")])
    result = evaluate_agent(backend, frame, max_turns=10, max_tokens=16, max_tasks=1)
    assert (result["tool_calls"], result["well_formed_tool_calls"], result["malformed_tool_calls"]) == (2, 1, 2)
    assert result["end_reasons"] == {REQUEST_ERROR: 1} and result["mean_turns"] == 4
    assert result["pass^1"] == 0.0 and result["rubric_pass_rate"] == 0.0


def test_a_refused_request_fails_even_a_task_that_needs_nothing(tasks):
    """On a task with no writes and no outputs, doing nothing wins; a refused request still fails."""
    task = tasks[0]
    goals = [g.model_copy(update={"outputs": []}) for g in task.goals]
    lookup = task.model_copy(update={"plan": task.plan[:1], "goals": goals, "split": "test"})
    assert not lookup.checkpoints and not lookup.outputs
    frame = pd.DataFrame([task_to_row(lookup)])
    silent = evaluate_agent(Replies([{"role": "assistant", "content": "Done."}]), frame, max_turns=4, max_tokens=16)
    refused = evaluate_agent(Replies([RequestError("prompt too long")]), frame, max_turns=4, max_tokens=16)
    assert silent["pass^1"] == 1.0 and refused["pass^1"] == 0.0 and refused["end_reasons"] == {REQUEST_ERROR: 1}


def test_a_checkpoint_in_memory_as_the_k2_backend_and_served_scores_the_same(tasks, tokenizer, model, tmp_path, monkeypatch):
    model.eval()
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    frame = pd.DataFrame([task_to_row(t) for t in tasks])
    settings = dict(max_turns=3, max_tasks=2)
    in_memory = evaluate_tool_use(model, tokenizer, frame, max_new_tokens=8, **settings)
    k2 = make_backend(K2LLMConfig(kind="k2", path=str(folder)))
    from_folder = evaluate_agent(k2, frame, max_tokens=8, **settings)
    with running_server(k2, "ckpt") as server:
        monkeypatch.setenv("K2_TEST_LLM_URL", server.url)
        remote = make_backend(OpenAILLMConfig(kind="openai", model="ckpt", base_url_env="K2_TEST_LLM_URL", max_retries=0))
        served = evaluate_agent(remote, frame, max_tokens=8, **settings)
    assert served == from_folder and sum(from_folder["end_reasons"].values()) == 2
    # only the in-memory backend sees (and counts) the calls K2's parser drops
    assert {**in_memory, "malformed_tool_calls": 0} == {**from_folder, "malformed_tool_calls": 0}
    assert in_memory["malformed_tool_calls"] >= from_folder["malformed_tool_calls"]


def test_a_conversation_beyond_the_context_is_a_refused_request(tasks, tokenizer):
    short = K2ForCausalLM(K2Config.preset("tiny", vocab_size=len(tokenizer), **{**TINY, "max_position_embeddings": 256}))
    frame = pd.DataFrame([task_to_row(t) for t in tasks])
    result = evaluate_tool_use(short.eval(), tokenizer, frame, max_turns=3, max_new_tokens=8, max_tasks=2)
    assert result["end_reasons"] == {REQUEST_ERROR: 2} and result["pass^1"] == 0.0 and result["mean_turns"] == 0
