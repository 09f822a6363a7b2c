"""DyCoke token compression, pure torch: TTM drops redundant frame tokens before prefill (ttm.py),
DP lets late layers attend to the visual KV entries that matter at each decode step (kv.py).

Nothing here imports transformers at module import time (kv.enable does, when called), so the CLI
can import this package and still start fast.
"""

from dycoke_cli.compress.kv import ATTENTION_NAME, DecodePruner, DPConfig, enable, pruning
from dycoke_cli.compress.ttm import ttm_keep_indices, ttm_kept_count

__all__ = [
    "ATTENTION_NAME",
    "DPConfig",
    "DecodePruner",
    "enable",
    "pruning",
    "ttm_keep_indices",
    "ttm_kept_count",
]
