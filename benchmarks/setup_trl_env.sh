#!/usr/bin/env bash
# Build a separate virtualenv with Hugging Face TRL 0.11.4 (the last TRL with the
# classic PPOTrainer.step API), used only by the benchmark and by
# tests/fixtures/make_trl_reference.py. It is NOT a dependency of rlhfkit.
#
#   bash benchmarks/setup_trl_env.sh            # creates benchmarks/.trl-env
#   TRL_ENV=/some/dir bash benchmarks/setup_trl_env.sh
#
# Idempotent: a marker file records the pins; if it matches, nothing is done.
# Pins that work together (checked on Python 3.11, CPU):
#   torch==2.13.0 is installed FIRST, on its own, so pip takes the CPU wheel and
#   never pulls the CUDA build; transformers 4.46+ breaks TRL 0.11.4 (the
#   PPOTrainer / Trainer signature changes), so transformers==4.45.2; TRL imports
#   `rich` without declaring it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TRL_ENV="${TRL_ENV:-$HERE/.trl-env}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PINS=(
  "trl==0.11.4"
  "transformers==4.45.2"
  "accelerate==1.0.1"
  "tokenizers==0.20.3"
  "datasets==3.0.2"
  "numpy==2.2.6"
  "safetensors==0.4.5"
  "rich"
)
MARKER="$TRL_ENV/.rlhfkit-trl-env"
WANT="$TORCH_SPEC ${PINS[*]}"

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$WANT" ]] \
   && "$TRL_ENV/bin/python" -c "import trl" >/dev/null 2>&1; then
  echo "TRL env already set up at $TRL_ENV"
  exit 0
fi

echo "Creating TRL env at $TRL_ENV"
"$PYTHON" -m venv "$TRL_ENV"
"$TRL_ENV/bin/pip" install -q --upgrade pip
"$TRL_ENV/bin/pip" install -q "$TORCH_SPEC"
# keep torch where it is: a constraint stops the resolver from swapping it.
"$TRL_ENV/bin/pip" install -q "${PINS[@]}" "$TORCH_SPEC"
"$TRL_ENV/bin/python" - <<'PY'
import torch, transformers, accelerate, trl, numpy, datasets
from trl import PPOTrainer, PPOConfig, AutoModelForCausalLMWithValueHead  # noqa: F401
print("trl", trl.__version__, "transformers", transformers.__version__,
      "accelerate", accelerate.__version__, "torch", torch.__version__,
      "numpy", numpy.__version__, "datasets", datasets.__version__)
PY
echo "$WANT" > "$MARKER"
echo "TRL env ready: $TRL_ENV/bin/python"
