"""Stage `prepare`: build the corpus and tokenizer both experiments train on."""

from __future__ import annotations

import json

from experiments.config import HERE, DataConfig, load_params
from experiments.data import prepare


def main() -> None:
    summary = prepare(DataConfig(**load_params()["data"]), HERE / "data")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
