# Shared by the studies' run.sh scripts (sourced, not run): the scale, the folders and the steps.
#
#   SCALE=demo   (default) the CPU demo data and sizes of experiment=demo: minutes per run, two torch threads
#   SCALE=paper  the paper recipes (experiment=...) on DIV2K, on GPUs: days per run
#   PYTHON=...   the interpreter with sr_gan installed (default: python)
#   RUNS=...     where the training runs go (default: logs/experiments/<study>/<scale>, not committed)
#
# Training runs are resumable: a step whose run folder says "status": "done" is kept, an
# interrupted one continues from its last.ckpt (ckpt_path=last). Results (tables, figures) are
# written to experiments/<study>/results/<scale>/, the folder that is committed.
set -euo pipefail

SCALE=${SCALE:-demo}
case $SCALE in
demo | paper) ;;
*)
    echo "SCALE=$SCALE: use SCALE=demo (CPU, minutes) or SCALE=paper (DIV2K on GPUs, days)" >&2
    exit 2
    ;;
esac
# Demo scale trains with two torch threads per process whatever the shell exports: a CPU run's weights
# depend on the thread count (cpu_threads=auto takes the cores), and a GAN stage carries a difference in
# the last bits to whole dB (srgan_content_loss's VGG22 row: 22.54 dB with 2 threads, 18.66 with 1), so
# the committed results/demo come out again only with the count they were made with: 2.
[[ $SCALE == paper ]] || export OMP_NUM_THREADS=2
PYTHON=${PYTHON:-python}
STUDY_DIR=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
STUDY=$(basename "$STUDY_DIR")
REPO=$(cd "$STUDY_DIR/../.." && pwd)
cd "$REPO" # configs, logs/ and data/ are found from the repository root
RUNS=${RUNS:-logs/experiments/$STUDY/$SCALE}
RESULTS=$STUDY_DIR/results/$SCALE
mkdir -p "$RUNS" "$RESULTS"

# train NAME OVERRIDE...: one training run in $RUNS/NAME (kept if done, resumed if interrupted).
train() {
    local name=$1
    shift
    local dir=$RUNS/$name
    if grep -qs '"status": "done"' "$dir/run.json"; then
        echo "[$STUDY] $name: done, kept ($dir)"
        return
    fi
    echo "[$STUDY] $name: python -m sr_gan.train $*"
    "$PYTHON" -m sr_gan.train "$@" hydra.run.dir="$dir" ckpt_path=last
}

# run_config RUN KEY: a value of RUN's resolved config.yaml, e.g. `run_config $RUNS/gan model.init_from`.
run_config() {
    "$PYTHON" -c 'import sys; from omegaconf import OmegaConf; print(OmegaConf.select(OmegaConf.load(sys.argv[1]), sys.argv[2]))' \
        "$1/config.yaml" "$2"
}

# compare RUN...: sr_gan.compare's table, curves, crops and perception-distortion plane into $RESULTS.
compare() {
    "$PYTHON" -m sr_gan.compare "$@" out_dir="$RESULTS"
}
