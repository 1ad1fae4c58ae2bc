"""Model code loads when a model asset first runs, not when the Definitions load.

XGBoost, scikit-learn and SciPy take ~4 s to import; every `scorehouse` command, the webserver's code server
and each run worker load the Definitions, and most of them (ingest, features, the UI, `rollback`) never train
or score. `lazy_module` returns the module at once and executes it on first attribute access.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
