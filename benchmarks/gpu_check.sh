#!/usr/bin/env bash
# The prepared GPU check (issue 8): one command, under 8 minutes on one H100 including start-up.
#
#   benchmarks/gpu_check.sh --out DIR [--budget-s 450]    # on a GPU node
#   benchmarks/gpu_check.sh --dry-run --out DIR           # anywhere: CPU, tiny sizes, same code paths
#
# It works on an air-gapped node whose Python has torch, lightning, torchmetrics, safetensors and
# scikit-image but not hydra-core, omegaconf, antlr4-python3-runtime or kornia: those are installed
# from the wheels shipped in .whl/ at the repository root (or $SR_GAN_WHEELS), which `make
# gpu-wheels` downloads where PyPI is reachable, into a private folder on PYTHONPATH. W&B is not
# needed: every run logs with logger=csv. Writes gpu_check.json and gpu_check.md into --out
# (default: $OUT, else ./gpu_check_out); the rest goes to a temporary folder.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
wheels="${SR_GAN_WHEELS:-$root/.whl}"
site="${SR_GAN_SITE:-${TMPDIR:-/tmp}/sr_gan_site}"

missing="$("$python" -c 'import importlib.util as u; print(*[m for m in ("hydra", "omegaconf", "antlr4", "kornia") if u.find_spec(m) is None])')"
if [ -n "$missing" ]; then
  if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    echo "error: $missing not installed and no wheels in $wheels: run 'make gpu-wheels' where PyPI is reachable and ship .whl/ with the repository" >&2
    exit 2
  fi
  echo "[gpu_check.sh] installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels into $site (missing: $missing)"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root/src:$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
cd "$root"
exec "$python" -m benchmarks.gpu_check "$@"
