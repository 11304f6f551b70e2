#!/usr/bin/env bash
# Network interpolation (ESRGAN, Wang et al. 2018, Sec. 3.4 and Fig. 9):
# theta = (1 - alpha) theta_PSNR + alpha theta_GAN for alpha = 0, 0.2, ..., 1, then PSNR and the
# perception-distortion plane of each interpolated generator.
#   SCALE=demo  experiments/network_interpolation/run.sh   # CPU, tiny RRDBNet, embedded photos
#   SCALE=paper experiments/network_interpolation/run.sh   # RRDB-PSNR + ESRGAN on DIV2K (GPUs), Set5/Set14/BSD100
# GAN_RUN=<a finished RRDB GAN run folder> reuses one (e.g. esrgan_fig7's 5_rrdb) instead of training it.
source "$(dirname "$0")/../lib.sh"

if [[ $SCALE == paper ]]; then
    train psnr experiment=rrdb_psnr_x4
    GAN_RUN=${GAN_RUN:-$RUNS/gan}
    [[ -d $GAN_RUN ]] || train gan experiment=esrgan_x4 model.init_from="$RUNS/psnr/checkpoints/last.ckpt"
    psnr=$RUNS/psnr/checkpoints/last.ckpt # the GAN run's start
    datasets="[Set5,Set14,BSD100]"
else
    GAN_RUN=${GAN_RUN:-$RUNS/gan}
    [[ -d $GAN_RUN ]] || train gan model=rrdb loss=ragan # starts from the cached demo RRDB PSNR stage
    psnr=$(run_config "$GAN_RUN" model.init_from)         # that stage's last.ckpt
    datasets="[$(run_config "$GAN_RUN" data.val_hr_dir)]" # the 2 demo validation photos
fi
gan=$GAN_RUN/checkpoints/last.ckpt # a GAN stage's result is its last checkpoint, not its PSNR-best

weights=()
for alpha in 0.0 0.2 0.4 0.6 0.8 1.0; do
    out=$RUNS/interpolated/alpha_$alpha.safetensors
    "$PYTHON" -m sr_gan.interpolate psnr="$psnr" gan="$gan" alpha=$alpha out="$out"
    weights+=("$out")
done
ckpts=$(IFS=,; echo "${weights[*]}")
"$PYTHON" -m sr_gan.evaluate "ckpt=[$ckpts]" datasets="$datasets" plot=true out_dir="$RESULTS"
# The two ends as training runs side by side (table, curves, crops): the PSNR stage and the GAN stage.
"$PYTHON" -m sr_gan.compare "$(dirname "$(dirname "$psnr")")" "$GAN_RUN" out_dir="$RESULTS/psnr_vs_gan"
