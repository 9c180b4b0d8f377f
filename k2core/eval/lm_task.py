"""`lm_loss`: bits per byte of held-out text, for any backend that scores log-likelihoods (local models, k2
checkpoints).

- **Text.** `TaskOptions.texts`: a .txt file (documents split on blank lines), a .jsonl file or a .parquet file
  with a `text` column (e.g. a k2 corpus's held-out documents). Without one: the last `DEFAULT_CHARS` characters of
  the CPython standard library's docstrings (`k2core.data.corpus`, offline everywhere). No corpus source reads this
  tail (`stdlib_docstrings` stops before it, `stdlib_code` and `python_docs` leave out its modules), so it is held
  out from every profile's pretraining data whatever its caps; it is not held out from models trained on the web,
  which have likely read Python's documentation.
- **Samples.** Each text is cut on paragraph boundaries into pieces of at most `PIECE_BYTES` UTF-8 bytes (so a
  piece fits any context of 1,024 tokens: every token covers at least one byte), and each piece is scored as its
  own document: `loglikelihood("", [piece])`, i.e. after the backend's document prefix (EOS for k2 checkpoints,
  the tokenizer's own BOS for local models; a local tokenizer that adds none leaves a piece's first token unscored).
- **Metric.** bits_per_byte = sum of bits / sum of UTF-8 bytes over the pieces (a ratio: the bootstrap resamples
  pieces). It does not depend on the tokenizer, so models with different vocabularies compare. A sample's value is
  its own bits per byte.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

from k2core.data.corpus import STDLIB_HELDOUT_CHARS, chunk_text, stdlib_docstring_texts
from k2core.errors import UserError
from k2core.eval.harness import Output, Sample, Score, Task, TaskOptions, subset
from k2core.eval.stats import Metric
from k2core.llm.base import ChatBackend
from k2core.llm.loglik import LoglikelihoodBackend
from k2core.storage import read_parquet

DEFAULT_SOURCE = "stdlib_docstrings"
DEFAULT_CHARS = STDLIB_HELDOUT_CHARS
PIECE_BYTES = 1000


def read_texts(path: str | Path) -> list[str]:
    """The documents of a .txt (blank-line separated), .jsonl or .parquet (`text` column) file."""
    where = Path(path)
    if where.suffix == ".parquet":
        frame = read_parquet(str(path))
        if "text" not in frame.columns:
            raise UserError(f"{path}: lm_loss needs a `text` column (has {list(frame.columns)})")
        return [str(t) for t in frame["text"]]
    if not where.is_file():
        raise UserError(f"{path}: no such file (lm_loss reads a .txt, .jsonl or .parquet file)")
    if where.suffix == ".jsonl":
        texts = []
        for n, line in enumerate(where.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise UserError(f"{path}:{n}: each line must be a JSON object with a string `text`")
                texts.append(row["text"])
        return texts
    if where.suffix == ".txt":
        return [t for t in where.read_text(encoding="utf-8").split("\n\n") if t.strip()]
    raise UserError(f"{path}: lm_loss reads .txt, .jsonl or .parquet files, not {where.suffix or 'this file'}")


@cache
def default_texts() -> tuple[str, ...]:
    """The last DEFAULT_CHARS characters of the stdlib docstrings (whole texts, the first one cut at its start)."""
    return tuple(stdlib_docstring_texts(heldout=True))


def pieces(text: str, max_bytes: int = PIECE_BYTES) -> list[str]:
    """`text` cut on paragraph boundaries (then inside paragraphs) into pieces of at most `max_bytes` bytes."""
    out = []
    for piece in chunk_text(text, max_bytes):
        size = len(piece.encode("utf-8"))
        if size <= max_bytes:
            out.append(piece)
        else:  # multi-byte characters: cut again, at fewer characters
            out.extend(pieces(piece[: len(piece) // 2], max_bytes) + pieces(piece[len(piece) // 2:], max_bytes))
    return [p for p in out if p.strip()]


@dataclass
class TextLoglikelihoodSolver:
    """The log-likelihood of a sample's text as a document of its own (`metadata["text"]`)."""

    @property
    def settings(self) -> dict[str, Any]:
        return {"solver": "text_loglikelihood"}

    def check(self, backend: ChatBackend) -> None:
        if not isinstance(backend, LoglikelihoodBackend):
            raise UserError(f"lm_loss needs log-likelihoods; {backend.backend_id} only generates (evaluate a local "
                            "model or a k2 checkpoint)")

    def __call__(self, sample: Sample, backend: ChatBackend) -> Output:
        text = sample.metadata["text"]
        nats = cast(LoglikelihoodBackend, backend).loglikelihood("", [text])[0]
        return Output(prompt=text, choice_logprobs=[nats])


def score(sample: Sample, output: Output) -> Score:
    bits = -(output.choice_logprobs or [math.nan])[0] / math.log(2)
    size = len(sample.metadata["text"].encode("utf-8"))
    return Score(value=bits / size, values={"bits": bits, "bytes": float(size)}, reason=f"{bits:.1f} bits, {size} bytes")


def lm_task(options: TaskOptions) -> Task:
    """Bits per byte over the pieces of `options.texts` (or the default offline text); `limit`: a seeded subset."""
    texts = read_texts(options.texts) if options.texts else list(default_texts())
    chunks = [p for text in texts for p in pieces(text)]
    if not chunks:
        raise UserError(f"lm_loss: {options.texts or 'the default text'} holds no text to score")
    samples = [Sample(id=f"lm/{i}", metadata={"text": chunk}) for i, chunk in enumerate(chunks)]
    return Task("lm_loss", subset(samples, options.limit, options.seed), TextLoglikelihoodSolver(), score,
                [Metric("bits_per_byte", value="bits", per="bytes", proportion=False)])
