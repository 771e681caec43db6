"""Training: data and batches, the training loop, checkpoints, and the model-family registry."""
from numpylm.training.checkpoint import (Checkpoint, CheckpointError, load_checkpoint,
                                         save_checkpoint)
from numpylm.training.data import (TokenData, build_tokenizer, encode_text, get_batch, prepare_data,
                                   train_val_split)
from numpylm.training.families import (FAMILIES, Family, LadderSpec, LoadedModel, build_model,
                                       get_family, load_model, register_family)
from numpylm.training.loop import TrainConfig, TrainResult, estimate_loss, make_optimizer, train

__all__ = ["Checkpoint", "CheckpointError", "FAMILIES", "Family", "LadderSpec", "LoadedModel",
           "get_family", "TokenData", "TrainConfig",
           "TrainResult", "build_model", "estimate_loss", "build_tokenizer", "encode_text", "get_batch",
           "load_checkpoint", "load_model", "make_optimizer", "prepare_data", "register_family",
           "save_checkpoint", "train", "train_val_split"]
