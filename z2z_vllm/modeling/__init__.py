"""zip2zip at the PyTorch / Hugging Face level: hyper-encoders, dynamic embedding and
unembedding over any causal LM, the training loss and reference generation. No vLLM here.

    from z2z_vllm.modeling import Zip2ZipForCausalLM

    model = Zip2ZipForCausalLM.from_base(base, max_codebook_size=512, max_subtokens=4, tokenizer=tok)
    ids = model.codec.encode(tok("some text")["input_ids"])
    out = model(torch.tensor([ids]), labels=torch.tensor([ids]))  # out.loss, out.logits [1, T, V+C]
    generated = model.generate([ids], max_new_tokens=16).sequences[0]
    text = tok.decode(expand_generated(model.codec, ids, generated))

Module map: ``config`` (Zip2ZipConfig, EncoderConfig), ``encoders``, ``codebooks``
(CodebookBatch for data pipelines), ``model`` (wrapper, losses, save/load), ``generation``.
"""

from z2z_vllm.modeling.codebooks import NEVER, CodebookBatch
from z2z_vllm.modeling.config import EncoderConfig, Zip2ZipConfig, disabled_ids_for
from z2z_vllm.modeling.encoders import (
    AttentionEncoder,
    MeanEncoder,
    ResidualEncoder,
    TransformerEncoder,
    build_encoder,
    reference_state_dict,
)
from z2z_vllm.modeling.generation import GenerationOutput, HyperCache, expand_generated, generate
from z2z_vllm.modeling.model import WEIGHTS_FILE, ReconstructionHead, Zip2ZipForCausalLM, Zip2ZipOutput

__all__ = [
    "AttentionEncoder",
    "CodebookBatch",
    "EncoderConfig",
    "GenerationOutput",
    "HyperCache",
    "MeanEncoder",
    "NEVER",
    "ReconstructionHead",
    "ResidualEncoder",
    "TransformerEncoder",
    "WEIGHTS_FILE",
    "Zip2ZipConfig",
    "Zip2ZipForCausalLM",
    "Zip2ZipOutput",
    "build_encoder",
    "disabled_ids_for",
    "expand_generated",
    "generate",
    "reference_state_dict",
]
