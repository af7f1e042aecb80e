#!/usr/bin/env bash
# Build a separate virtualenv with Hugging Face TRL 1.16.0 (modern SFTTrainer /
# RewardTrainer), used only by benchmarks/train_bench.py as the baseline. It is NOT a
# dependency of rlhfkit.
#
#   bash benchmarks/setup_trl116_env.sh            # creates benchmarks/.trl116-env
#   TRL116_ENV=/some/dir bash benchmarks/setup_trl116_env.sh
#
# Idempotent: a marker file records the requested specs; if it matches and TRL imports,
# nothing is done. torch==2.13.0 is installed FIRST, on its own, so pip takes the local
# CPU wheel and never pulls the CUDA build; it is then passed again as a constraint so
# the resolver cannot swap it. Everything else is what trl==1.16.0 resolves to; the
# exact versions are written to $TRL116_ENV/versions.txt (pip freeze) on set-up.
# Resolved on Python 3.11, CPU (TRL_RESOLVED below):
#   transformers 5.23.0, accelerate 1.15.0, datasets 5.2.0, tokenizers 0.23.3,
#   numpy 2.4.6, huggingface_hub 2.4.0, safetensors 0.8.0 (set TRL116_EXACT=1 to
#   install exactly these instead of letting pip resolve).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TRL116_ENV="${TRL116_ENV:-$HERE/.trl116-env}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PINS=("trl==1.16.0")
TRL_RESOLVED=(
  "transformers==5.23.0"
  "accelerate==1.15.0"
  "datasets==5.2.0"
  "tokenizers==0.23.3"
  "numpy==2.4.6"
  "huggingface_hub==2.4.0"
  "safetensors==0.8.0"
)
if [[ "${TRL116_EXACT:-0}" == 1 ]]; then
  PINS+=("${TRL_RESOLVED[@]}")
fi
MARKER="$TRL116_ENV/.rlhfkit-trl116-env"
WANT="$TORCH_SPEC ${PINS[*]}"

verify() {
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$TRL116_ENV/bin/python" - <<'PY'
import torch, transformers, accelerate, trl, numpy, datasets, tokenizers
from trl import SFTTrainer, SFTConfig, RewardTrainer, RewardConfig  # noqa: F401
assert trl.__version__ == "1.16.0", trl.__version__
assert torch.__version__.startswith("2.13.0"), torch.__version__
print("trl", trl.__version__, "transformers", transformers.__version__,
      "accelerate", accelerate.__version__, "datasets", datasets.__version__,
      "tokenizers", tokenizers.__version__, "torch", torch.__version__, "numpy", numpy.__version__)
PY
}

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$WANT" ]] && verify >/dev/null 2>&1; then
  echo "TRL 1.16 env already set up at $TRL116_ENV"
  exit 0
fi

echo "Creating TRL 1.16 env at $TRL116_ENV"
"$PYTHON" -m venv "$TRL116_ENV"
"$TRL116_ENV/bin/pip" install -q --upgrade pip
"$TRL116_ENV/bin/pip" install -q "$TORCH_SPEC"
"$TRL116_ENV/bin/pip" install -q "${PINS[@]}" "$TORCH_SPEC"
verify
"$TRL116_ENV/bin/pip" freeze > "$TRL116_ENV/versions.txt"
echo "$WANT" > "$MARKER"
echo "TRL 1.16 env ready: $TRL116_ENV/bin/python (versions in $TRL116_ENV/versions.txt)"
