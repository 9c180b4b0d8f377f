"""Prefect tasks of the data stages."""

from k2core.data.synth import run_synth
from k2core.data.tokenizer import train_tokenizer
from k2core.validation import validate_all
from tasks import k2_task

synthesize = k2_task(run_synth, name="synthesize")
validate = k2_task(validate_all, name="validate")
tokenize_train = k2_task(train_tokenizer, name="train-tokenizer")
