"""Admission checks of single requests: :func:`check_request` runs where vLLM validates a
request's parameters (:mod:`z2z_vllm.vllm.patches` adds it to the validator the input processor
builds for a z2z model); a refused request gets a ``ValueError`` (HTTP 400 on the server) before
it reaches the engine.

Not a custom logits processor (vLLM's extension point with the same admission hook): vLLM
refuses custom logits processors with speculative decoding, which z2z models support.
"""

from __future__ import annotations

from vllm.exceptions import VLLMValidationError
from vllm.sampling_params import SamplingParams

__all__ = ["check_request", "unsupported_request_features"]


def unsupported_request_features(params: SamplingParams) -> list[str]:
    """Names of the options in ``params`` that z2z models do not support yet.

    vLLM applies options over token ids to the ids the model emits, which are compressed: a
    hypertoken id stands for different base ids in each request and position, and a base id
    also occurs inside hypertokens. So options that read or write particular ids would act on
    the wrong tokens (a logit_bias of -100 on a base id would still let it through inside
    hypertokens): they are refused. stop_token_ids works over base ids (the detokenizer
    stops inside a hypertoken)."""
    asked = {
        # Scoring prompt positions needs the codebook as it was at each of them.
        "prompt_logprobs": params.prompt_logprobs is not None,
        "prompt_logprob_token_ids": params.prompt_logprob_token_ids is not None,
        # Grammars and banned words are written over base tokens, not hypertokens.
        "structured outputs": params.structured_outputs is not None,
        "bad_words": bool(params.bad_words),
        "logit_bias": bool(params.logit_bias),
        "allowed_token_ids": params.allowed_token_ids is not None,
        # Penalties count the ids emitted: repeats of base tokens inside hypertokens go unseen.
        "presence_penalty": params.presence_penalty != 0.0,
        "frequency_penalty": params.frequency_penalty != 0.0,
        "repetition_penalty": params.repetition_penalty != 1.0,
        # Scores of given ids: a base id's is not the probability that the text continues
        # with it (hypertokens starting with it count too).
        "logprob_token_ids": params.logprob_token_ids is not None,
        # Repeated text shows as ever longer hypertokens, not as repeated id patterns.
        "repetition_detection": params.repetition_detection is not None,
        # Forced ids would have to be a valid compressed stream, checked nowhere before the runner.
        "trace_decode_token_ids": params.trace_decode_token_ids is not None,
    }
    return [name for name, is_asked in asked.items() if is_asked]


def check_request(params: SamplingParams) -> None:
    """Raises vLLM's ValueError for bad requests (HTTP 400) naming the options of ``params`` z2z
    models refuse."""
    refused = unsupported_request_features(params)
    if refused:
        raise VLLMValidationError(f"z2z models do not support {', '.join(refused)} yet", parameter=refused[0])
