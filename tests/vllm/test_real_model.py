"""The plugin on a real pretrained model: SmolLM2-135M-Instruct as a z2z model, real held-out code
and prose as text prompts, vLLM's greedy output token for token equal to the HF reference.

The hyper-encoders get small random output projections (untrained, a residual encoder would
score a hypertoken exactly like its first subtoken, and greedy decoding would hinge on ties).
"""

from __future__ import annotations

import pytest
import torch

from tests.vllm.helpers import make_llm

vllm = pytest.importorskip("vllm")

MAX_TOKENS = 32
PROMPT_CHARS = 800


@pytest.fixture(scope="module")
def smollm2_export(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from z2z_vllm.data.models import base_model_dir
    from z2z_vllm.modeling import EncoderConfig, Zip2ZipForCausalLM
    from z2z_vllm.training import export_for_serving, save_checkpoint

    base_dir = base_model_dir("smollm2-135m")
    model = Zip2ZipForCausalLM.from_base(
        AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
        tokenizer=AutoTokenizer.from_pretrained(base_dir),
        max_codebook_size=256,
        max_subtokens=4,
        input_encoder=EncoderConfig(kind="residual"),
        reconstruction_weight=0.0,
    )
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for encoder in (model.input_encoder, model.output_encoder):
            encoder.proj_out.weight.copy_(torch.randn(encoder.proj_out.weight.shape, generator=g) * 0.02)
    root = tmp_path_factory.mktemp("smollm2_z2z")
    checkpoint = save_checkpoint(model, root / "checkpoint")
    return export_for_serving(checkpoint, root / "export", base_model=base_dir, dtype=torch.float32)


def test_smollm2_greedy_matches_the_hf_reference(smollm2_export):
    from z2z_vllm.data import corpus_text
    from z2z_vllm.modeling.config import Zip2ZipConfig
    from z2z_vllm.modeling.generation import generate
    from z2z_vllm.training import load_for_inference

    texts = [corpus_text(domain, split="heldout", max_bytes=4 * PROMPT_CHARS)[:PROMPT_CHARS] for domain in ("code", "prose")]
    engine = make_llm(smollm2_export, max_model_len=1024)
    try:
        outputs = engine.generate(texts, vllm.SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0), use_tqdm=False)
    finally:
        engine.llm_engine.engine_core.shutdown()
    prompts = [list(o.prompt_token_ids) for o in outputs]
    V = Zip2ZipConfig.load(smollm2_export).initial_vocab_size
    assert all(any(t >= V for t in p) for p in prompts), "real text prompts compress into hypertokens"

    model = load_for_inference(smollm2_export, dtype=torch.float32)
    eos = model.base_model.config.eos_token_id
    reference = generate(model, prompts, max_new_tokens=MAX_TOKENS, eos_token_id=eos).sequences
    assert [list(o.outputs[0].token_ids) for o in outputs] == reference
    assert all(o.outputs[0].text for o in outputs)
