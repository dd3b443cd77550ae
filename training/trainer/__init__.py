"""CAT / PUE training: TrainConfig (YAML), Trainer (torchrun DDP / FSDP loop). CLI: `pixelvla-train`."""
from .config import TrainConfig
from .loop import Trainer, masked_l1

__all__ = ["TrainConfig", "Trainer", "masked_l1"]
