"""Prefect tasks of the data stages (synth maps its trajectory shards through tasks/agentic.py)."""

from k2core.data.tokenizer import train_tokenizer
from k2core.validation import validate_all
from tasks import k2_task

validate = k2_task(validate_all, name="validate")
tokenize_train = k2_task(train_tokenizer, name="train-tokenizer")
