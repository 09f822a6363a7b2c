"""Token compression methods as plug-ins: a registry of methods (registry.py) behind one small
interface (base.py), one attention function that dispatches to a method's hook inside the language
model (attention.py), and the `--compress METHOD:KEY=VALUE,...` grammar (spec.py).

Nothing here imports torch at module import time, so the CLI can validate a spec and print its help
before anything heavy loads.
"""

from dycoke_cli.compress.base import Budget, Method, Param, Selection, VisualLayout
from dycoke_cli.compress.registry import METHODS, method_class
from dycoke_cli.compress.spec import CompressionSpec, parse_spec

__all__ = ["METHODS", "Budget", "CompressionSpec", "Method", "Param", "Selection", "VisualLayout", "method_class",
           "parse_spec"]
