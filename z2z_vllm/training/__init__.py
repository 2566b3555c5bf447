"""Training of zip2zip models: compressed data pipeline, LoRA uptraining with checkpoints and
resume, and bits-per-byte evaluation. See each module's docstring for how to run it.

Module map: ``config`` (TrainConfig), ``data`` (tokenize, compress, window, cache, collate),
``trainer`` (loop, checkpoints, resume, loading for evaluation), ``evaluate`` (bits per byte),
``checkpoints`` (checkpoint format, servable export), ``reference_import`` (authors' checkpoints).
"""

from z2z_vllm.training.checkpoints import export_for_serving, load_checkpoint, load_for_inference, save_checkpoint
from z2z_vllm.training.config import TrainConfig, load_train_config, parse_overrides
from z2z_vllm.training.data import Collator, CompressedDataset, build_dataset, load_documents, window_documents
from z2z_vllm.training.evaluate import BitsPerByte, bits_per_byte, compare_bits_per_byte
from z2z_vllm.training.reference_import import import_reference
from z2z_vllm.training.trainer import TrainState, latest_checkpoint, load_trained_model, train

__all__ = [
    "BitsPerByte",
    "Collator",
    "CompressedDataset",
    "TrainConfig",
    "TrainState",
    "bits_per_byte",
    "build_dataset",
    "compare_bits_per_byte",
    "export_for_serving",
    "import_reference",
    "latest_checkpoint",
    "load_checkpoint",
    "load_documents",
    "load_for_inference",
    "load_train_config",
    "load_trained_model",
    "parse_overrides",
    "save_checkpoint",
    "train",
    "window_documents",
]
