"""The tool-use evaluation loop: scored with a scripted oracle, and run end to end with a tiny random K2 model."""

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
from k2core.eval.tool_env import evaluate_tool_use, held_out_tasks, pass_hat_k, run_tool_eval
from k2core.model import K2Config, K2ForCausalLM

TINY = dict(
    hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=2, n_routed_experts=4, num_experts_per_tok=2, kv_lora_rank=16, q_lora_rank=16,
    qk_rope_head_dim=8, v_head_dim=8, qk_nope_head_dim=8, max_position_embeddings=8192,
)


@pytest.fixture(scope="module")
def tasks():
    return generate_tasks(["retail", "library"], 8, 1, 3, ["terse", "chatty", "guarded"], 0.5, seed=21)


def oracle(task, env, tools):
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
    def silent(task, env, tools):
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

    monkeypatch.setattr("k2core.eval.tool_env.generate", fake_generate)
    frame = pd.DataFrame([task_to_row(task)])
    result = evaluate_tool_use(model, tokenizer, frame, max_turns=6, max_new_tokens=8)
    assert result["tool_calls"] == 1 == result["well_formed_tool_calls"] and result["malformed_tool_calls"] == 2
    assert "## Return of functions." in seen_prompts[1]
    assert '"user_id"' in seen_prompts[1] or '"member_id"' in seen_prompts[1]
    assert result["pass^1"] == 0.0
