"""How many pretraining epochs a profile's corpus gives: characters per source, tokens, and passes over them.

    .venv/bin/python benchmarks/corpus_tokens.py [--profile small] [--sample-chars 1500000]

Reads every `synth.<profile>.corpus` source up to its cap (characters after cleaning), trains a BPE with the
profile's `tokenizer` settings on `--sample-chars` characters of each source, counts characters per token on up to
1 M characters of each, and divides `pretrain.<profile>` steps x micro-batch x accumulation x seq_len by the tokens.
A tokenizer trained on the whole corpus merges a little more, so tokens are slightly overestimated. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from k2core.config import load_params  # noqa: E402
from k2core.data.corpus import build_text_corpus, read_source, source_name  # noqa: E402
from k2core.data.tokenizer import train_tokenizer  # noqa: E402
from k2core.storage import write_parquet  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="small")
    parser.add_argument("--sample-chars", type=int, default=1_500_000)
    args = parser.parse_args()
    params = load_params(profile=args.profile)
    corpus_cfg, pretrain = params.section("synth").corpus, params.section("pretrain")
    started = time.perf_counter()
    chars = {source_name(s): sum(map(len, read_source(s, corpus_cfg.max_chars_per_source))) for s in corpus_cfg.sources}
    sample_cfg = corpus_cfg.model_copy(update={"max_chars_per_source": min(args.sample_chars,
                                                                           corpus_cfg.max_chars_per_source)})
    sample, _ = build_text_corpus(sample_cfg)
    from transformers import PreTrainedTokenizerFast

    with tempfile.TemporaryDirectory() as folder:
        write_parquet(sample, f"{folder}/corpus.parquet")
        train_tokenizer(f"{folder}/corpus.parquet", params.section("tokenizer"), f"{folder}/tokenizer")
        tokenizer = PreTrainedTokenizerFast.from_pretrained(f"{folder}/tokenizer")
        per_token = {}
        for source, group in sample.groupby("source"):
            text = "\n\n".join(group["text"])[:1_000_000]
            per_token[source] = len(text) / len(tokenizer(text)["input_ids"])
    tokens = sum(chars[s] / per_token[s] for s in chars if s in per_token)
    budget = pretrain.steps * pretrain.micro_batch_size * pretrain.gradient_accumulation * pretrain.seq_len
    print(json.dumps({
        "profile": args.profile,
        "chars": chars,
        "total_chars": sum(chars.values()),
        "chars_per_token": {s: round(v, 3) for s, v in per_token.items()},
        "corpus_tokens": round(tokens),
        "pretrain_tokens": budget,
        "epochs": round(budget / tokens, 2),
        "tokenizer_sample_chars": int(sample["text"].str.len().sum()),
        "seconds": round(time.perf_counter() - started, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
