"""The process environment every part of the product runs in: offline, quiet, no telemetry.

Nothing may download at run time (weights, datasets, tokenizers), so the Hugging Face hub
and datasets are put in offline mode; Ray sends no usage statistics; tokenizers do not fork
threads under Ray's workers. A caller who set one of these already keeps their value.
"""

import os

ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def go_offline() -> None:
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
