"""Report bytes per token of every tokenizer on every domain, and check ids against the oracles.

    python -m z2z_vllm.data [--max-bytes 2000000] [--split heldout] [--no-parity]

Each domain contributes a prefix of at most ``--max-bytes`` UTF-8 bytes of the split; every
document is encoded on its own, without special tokens.
"""

from __future__ import annotations

import argparse
import time

from z2z_vllm.data import DOMAINS, SPLITS, TOKENIZER_NAMES, corpus_documents, load_tokenizer, reference_encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-bytes", type=int, default=2_000_000, help="bytes per domain (default 2 MB)")
    parser.add_argument("--split", choices=SPLITS, default="heldout")
    parser.add_argument("--no-parity", action="store_true", help="skip the oracle comparison")
    args = parser.parse_args()

    texts = {
        domain: [doc.text for doc in corpus_documents(domain, split=args.split, max_bytes=args.max_bytes)]
        for domain in DOMAINS
    }
    sizes = {domain: sum(len(text.encode("utf-8")) for text in docs) for domain, docs in texts.items()}
    print(f"bytes per token, {args.split} split, at most {args.max_bytes:,} bytes per domain")
    print(f"{'tokenizer':12s}" + "".join(f"{domain:>13s}" for domain in DOMAINS))
    print(f"{'(bytes)':12s}" + "".join(f"{sizes[domain]:>13,d}" for domain in DOMAINS))
    mismatches = 0
    for name in TOKENIZER_NAMES:
        tokenizer = load_tokenizer(name)
        row, checked, started = [], 0, time.perf_counter()
        for domain in DOMAINS:
            encoded = [e.ids for e in tokenizer.encode_batch(texts[domain], add_special_tokens=False)]
            row.append(sizes[domain] / max(1, sum(map(len, encoded))))
            if not args.no_parity:
                oracle = reference_encoder(name)
                for text, ids in zip(texts[domain], encoded):
                    mismatches += oracle(text) != ids
                checked += sizes[domain]
        parity = "" if args.no_parity else f"   oracle: {checked:,} bytes, {time.perf_counter() - started:.0f}s"
        print(f"{name:12s}" + "".join(f"{value:>13.2f}" for value in row) + parity)
    if not args.no_parity:
        print(f"documents whose ids differ from the oracle: {mismatches}")
        raise SystemExit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
