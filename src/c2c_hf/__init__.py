"""c2c_hf: Cache-to-Cache communication between two frozen causal LMs, the HuggingFace way.

Importing this package registers `C2CConfig` and `C2CForCausalLM` with `AutoConfig`, `AutoModel` and
`AutoModelForCausalLM`.
"""

import importlib

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .alignment import SpanAligner, SpanAlignment, TokenMap, build_token_map
from .cache import C2CCache
from .configuration_c2c import C2CConfig, build_layer_map, kv_shape
from .data import C2CDataCollator, MCItem, build_features, format_prompt, load_dataset_any
from .fuser import FUSIONS, C2CFuser, register_fusion
from .modeling_c2c import C2CForCausalLM, C2CPreTrainedModel, C2CPromptOutput
from .training import GateTemperatureCallback, SharerCacheMemo, check_resume_checkpoint, make_trainer

# Names of the evaluation package re-exported here; imported on first use, so that `import c2c_hf` loads the core only.
_EVALUATION_NAMES = {"extract_choice": "c2c_hf.evaluation.tasks", "load_benchmark": "c2c_hf.evaluation.tasks"}


def __getattr__(name: str):
    if name in _EVALUATION_NAMES:
        return getattr(importlib.import_module(_EVALUATION_NAMES[name]), name)
    raise AttributeError(f"module 'c2c_hf' has no attribute {name!r}")


AutoConfig.register(C2CConfig.model_type, C2CConfig, exist_ok=True)
AutoModel.register(C2CConfig, C2CForCausalLM, exist_ok=True)
AutoModelForCausalLM.register(C2CConfig, C2CForCausalLM, exist_ok=True)

__version__ = "0.1.0"

__all__ = [
    "FUSIONS",
    "C2CCache",
    "C2CConfig",
    "C2CDataCollator",
    "C2CForCausalLM",
    "C2CFuser",
    "C2CPreTrainedModel",
    "C2CPromptOutput",
    "GateTemperatureCallback",
    "MCItem",
    "SharerCacheMemo",
    "SpanAligner",
    "SpanAlignment",
    "TokenMap",
    "build_features",
    "build_layer_map",
    "build_token_map",
    "check_resume_checkpoint",
    "extract_choice",
    "format_prompt",
    "kv_shape",
    "load_benchmark",
    "load_dataset_any",
    "make_trainer",
    "register_fusion",
]
