"""Tuning, part 4 of the guide: how a pretrained document-completer becomes an assistant, and
how a model is adapted on one machine. One idea per module: `data` (conversations, preference
pairs, built-in tasks with checkers), `sft` (supervised fine-tuning on assistant tokens only), `packing` (examples sharing rows
without seeing each other),
`lora` and `peft_io` (low-rank adapters in PEFT's layout), `qlora` (adapters over a quantized
base), `dpo` (direct preference optimisation), `grpo` (reinforcement learning from a task's
checker, group-normalised advantages), `loading` (an adapter directory read as a model: its
base, adapter merged).
"""
from numpylm.tuning.lora import (LoRAConfig, LoRALinear, apply_lora, freeze, lora_layers,
                                 lora_state_dict, merge_lora, trainable_parameters,
                                 unmerge_lora)
from numpylm.tuning.loading import adapter_base, load_adapted_model, merge_and_unload
from numpylm.tuning.peft_io import (is_adapter_dir, load_adapter, load_adapter_config,
                                    save_adapter)

__all__ = ["LoRAConfig", "LoRALinear", "apply_lora", "freeze", "lora_layers",
           "lora_state_dict", "merge_lora", "trainable_parameters", "unmerge_lora",
           "is_adapter_dir", "load_adapter", "load_adapter_config", "save_adapter",
           "adapter_base", "load_adapted_model", "merge_and_unload"]
