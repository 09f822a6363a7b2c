"""`none`: no compression; the language model sees every visual token, attention is transformers' own.

The reference every other method is compared with: `ask --compress none` equals plain transformers
`generate` with the family's own pixel inputs, token for token (tests/test_engine.py).
"""

from __future__ import annotations

from dycoke_cli.compress.base import Method


class NoCompression(Method):
    name = "none"
    summary = "no compression: every visual token reaches the model"
