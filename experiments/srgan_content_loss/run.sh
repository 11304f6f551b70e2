#!/usr/bin/env bash
# SRGAN Table 1 (Ledig et al. 2017): the content loss of the GAN stage, MSE vs VGG22 vs VGG54,
# on SRResNet started from its PSNR stage, as one Hydra multirun sweep over loss=.
#   SCALE=demo  experiments/srgan_content_loss/run.sh   # CPU, tiny SRResNet, embedded photos (default)
#   SCALE=paper experiments/srgan_content_loss/run.sh   # SRResNet-MSE then SRGAN on DIV2K, on GPUs
source "$(dirname "$0")/../lib.sh"

losses=srgan_mse,srgan_vgg22,srgan
if [[ $SCALE == paper ]]; then
    train psnr experiment=srresnet_x4 # SRResNet-MSE, the stage every SRGAN row starts from
    psnr_run=$RUNS/psnr
    sweep=(experiment=srgan_x4 model.init_from="$psnr_run/checkpoints/last.ckpt")
else
    sweep=(model=srresnet) # experiment=demo: starts from the cached demo SRResNet PSNR stage (L1)
fi
# One job per loss in $RUNS/sweep/<n>; ckpt_path=last resumes a job that was interrupted. A sweep
# whose jobs are all done is kept (launching it again would rewrite their config.yaml).
jobs=$(tr , '\n' <<<"$losses" | wc -l)
if [[ $(grep -ls '"status": "done"' "$RUNS"/sweep/*/run.json 2>/dev/null | wc -l) -lt $jobs ]]; then
    "$PYTHON" -m sr_gan.train -m "${sweep[@]}" loss=$losses hydra.sweep.dir="$RUNS/sweep" ckpt_path=last
fi
[[ $SCALE == paper ]] || psnr_run=$(dirname "$(dirname "$(run_config "$RUNS/sweep/0" model.init_from)")")
compare "$psnr_run" "$RUNS"/sweep/[0-9]*
