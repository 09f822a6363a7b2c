"""Where the tool keeps what it builds and remembers: one cache folder, $DYCOKE_CACHE or ~/.cache/dycoke.

Random-weight models, the CPU dtype probe and chat history live under it; kept torch-free so any
command can name it before anything heavy is imported.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$DYCOKE_CACHE, else ~/.cache/dycoke."""
    return Path(os.environ.get("DYCOKE_CACHE") or Path.home() / ".cache" / "dycoke")
