"""Data synthesis (corpus, math learning notes, SFT rows) and the tokenizer; see `synth` and `tokenizer`."""
