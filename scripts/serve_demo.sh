#!/usr/bin/env bash
# The quick-start demo: `vllm serve` a z2z model, ask it for a completion and a chat answer over
# the OpenAI API with curl, print both, stop the server. The server listens on 127.0.0.1 only.
#
#   scripts/serve_demo.sh MODEL [PORT]     MODEL: a name `z2z list` shows (z2z-smollm2-135m) or a
#                                          folder; VLLM=path/to/vllm picks the vllm command
set -euo pipefail
MODEL=${1:?usage: serve_demo.sh MODEL [PORT]}
PORT=${2:-8000}
VLLM=${VLLM:-vllm}
URL="http://127.0.0.1:$PORT"
LOG=$(mktemp -t z2z-serve-XXXX.log)

# Small limits so the demo fits a laptop-sized CPU machine; drop them on a GPU.
VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2} "$VLLM" serve "$MODEL" --host 127.0.0.1 --port "$PORT" \
  --max-model-len 2048 --max-num-seqs 8 >"$LOG" 2>&1 &
SERVER=$!
# A server still starting may not stop on SIGTERM (seen with vLLM 0.32): SIGKILL after 30 s.
stop_server() {
  kill "$SERVER" 2>/dev/null || return 0
  for _ in $(seq 30); do kill -0 "$SERVER" 2>/dev/null || break; sleep 1; done
  kill -9 "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
}
trap stop_server EXIT

echo "vllm serve $MODEL on $URL (log: $LOG) ..."
# A cold start compiles the model: a few minutes on a small, busy CPU.
for _ in $(seq 600); do
  curl -sf "$URL/health" >/dev/null && break
  kill -0 $SERVER 2>/dev/null || { tail -30 "$LOG"; exit 1; }
  sleep 1
done
curl -sf "$URL/health" >/dev/null || { echo "server did not come up"; tail -30 "$LOG"; exit 1; }

echo; echo "== POST /v1/completions"
curl -s "$URL/v1/completions" -H "Content-Type: application/json" -d "{
  \"model\": \"$MODEL\", \"prompt\": \"def fibonacci(n):\", \"max_tokens\": 64, \"temperature\": 0
}"
echo; echo; echo "== POST /v1/chat/completions"
curl -s "$URL/v1/chat/completions" -H "Content-Type: application/json" -d "{
  \"model\": \"$MODEL\", \"max_tokens\": 64, \"temperature\": 0,
  \"messages\": [{\"role\": \"user\", \"content\": \"What is the capital of France?\"}]
}"
echo
