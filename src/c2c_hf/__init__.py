"""c2c_hf: Cache-to-Cache communication between two frozen causal LMs, the HuggingFace way.

Importing this package registers `C2CConfig` and `C2CForCausalLM` with `AutoConfig`, `AutoModel` and
`AutoModelForCausalLM`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .alignment import SpanAligner, SpanAlignment, TokenMap, build_token_map
from .data import MCItem, format_prompt
from .evaluation.tasks import extract_choice, load_benchmark
from .cache import C2CCache
from .configuration_c2c import C2CConfig, build_layer_map, kv_shape
from .data import C2CDataCollator, build_features, load_dataset_any
from .fuser import FUSIONS, C2CFuser, register_fusion
from .modeling_c2c import C2CForCausalLM, C2CPreTrainedModel, C2CPromptOutput
from .training import GateTemperatureCallback, SharerCacheMemo, check_resume_checkpoint, make_trainer

AutoConfig.register(C2CConfig.model_type, C2CConfig, exist_ok=True)
AutoModel.register(C2CConfig, C2CForCausalLM, exist_ok=True)
AutoModelForCausalLM.register(C2CConfig, C2CForCausalLM, exist_ok=True)

__version__ = "0.1.0"

__all__ = [
    "C2CCache",
    "C2CConfig",
    "C2CDataCollator",
    "C2CForCausalLM",
    "C2CFuser",
    "C2CPreTrainedModel",
    "C2CPromptOutput",
    "FUSIONS",
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
