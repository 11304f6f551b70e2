#!/usr/bin/env bash
# ESRGAN Fig. 7 (Wang et al. 2018, Sec. 4.3): from SRGAN to ESRGAN one change at a time.
#   SCALE=demo  experiments/esrgan_fig7/run.sh   # CPU, tiny generators, embedded photos (default)
#   SCALE=paper experiments/esrgan_fig7/run.sh   # the paper recipes on DIV2K, on GPUs
# The discriminator is held fixed (the VGG-style one of the reference code, discriminator=vgg128)
# and so is the generator EMA, so each step changes only what its column of Fig. 7 names.
source "$(dirname "$0")/../lib.sh"

if [[ $SCALE == paper ]]; then
    # Stage 1 of each generator: PSNR-oriented, as both papers (SRResNet-MSE recipe for SRResNet
    # with and without BN, RRDB-PSNR for RRDB). Then the GAN stages at the ESRGAN settings.
    train psnr_srresnet experiment=srresnet_x4
    train psnr_srresnet_nobn experiment=srresnet_x4 model=srresnet_nobn
    train psnr_rrdb experiment=rrdb_psnr_x4
    gan=(experiment=esrgan_x4 discriminator=vgg128 model.ema_decay=0.999)
    init() { echo "model.init_from=$RUNS/psnr_$1/checkpoints/last.ckpt"; }
else
    # experiment=demo: each GAN run starts from the cached demo PSNR stage of its own generator
    # (trained once, L1, sr_gan.demo_stage); model.ema_decay is the demo's 0.99 for every model.
    gan=(discriminator=vgg128)
    init() { :; }
fi

train 1_srgan "${gan[@]}" model=srresnet loss=srgan $(init srresnet)
train 2_nobn "${gan[@]}" model=srresnet_nobn loss=srgan $(init srresnet_nobn)
train 3_preact "${gan[@]}" model=srresnet_nobn loss=srgan_preact $(init srresnet_nobn)
train 4_ragan "${gan[@]}" model=srresnet_nobn loss=ragan $(init srresnet_nobn)
train 5_rrdb "${gan[@]}" model=rrdb loss=ragan $(init rrdb)

compare "$RUNS"/1_srgan "$RUNS"/2_nobn "$RUNS"/3_preact "$RUNS"/4_ragan "$RUNS"/5_rrdb
