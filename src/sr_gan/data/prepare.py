"""Prepare image folders once for fast training crops (see `sr_gan.data.prepared`, docs/data.md).

    python -m sr_gan.data.prepare data/DIV2K/DIV2K_train_HR data/DIV2K/DIV2K_train_LR_bicubic/X4
    python -m sr_gan.data.prepare photos/ --out /fast/disk/photos.prepared [--verify]

Each folder goes to `<folder>.prepared` beside it unless --out names one output per folder (training
reads `<folder>.prepared` only: the tool then prints the `ln -s` that puts it there). A
second run keeps what is prepared and current and rebuilds what changed (resumable). An image that
cannot be read is named at the end, the others are still prepared, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sr_gan.atomic import check_writable
from sr_gan.data.prepared import PreparedImages, prepare_folder, prepared_dir
from sr_gan.errors import INTERRUPTED_EXIT_CODE, UserError
from sr_gan.imageio import MAX_IMAGE_PIXELS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sr_gan.data.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="image folders (HR and LR alike)")
    parser.add_argument("--out", nargs="+", type=Path, help="one output folder per input (default <folder>.prepared)")
    parser.add_argument("--verify", action="store_true", help="then recompute every checksum (reads all arrays)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars or image counts")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_IMAGE_PIXELS,
        help="images above this many pixels are refused from their header (decompression bombs); 0: no limit "
        "(default: %(default)s, as data.max_image_pixels)",
    )
    args = parser.parse_args(argv)
    if args.max_pixels < 0:
        parser.error(f"--max-pixels {args.max_pixels}: give a number of pixels, or 0 for no limit")
    outs = args.out or [None] * len(args.folders)
    if len(outs) != len(args.folders):
        parser.error(f"--out names {len(outs)} folders for {len(args.folders)} inputs: give one per input")
    failed = False
    for folder, out in zip(args.folders, outs):
        try:  # one folder's bad image does not stop the others
            check_writable(out or prepared_dir(folder), key="--out")  # the default too: --out is the fix
            prepared = _interruptible(folder, out, progress=args.progress, max_pixels=args.max_pixels or None)
            _say_where_training_reads(folder, prepared)
            if args.verify:
                PreparedImages(prepared).verify(progress=args.progress)
                print(f"{prepared}: every checksum matches")
        except (UserError, FileNotFoundError) as err:
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
            failed = True
    if failed:
        raise SystemExit(2)


def _interruptible(folder: Path, out: Path | None, *, progress: bool, max_pixels: int | None) -> Path:
    """`prepare_folder`, whose Ctrl-C is one line (exit status 130): each image's arrays are written
    whole or not at all and recorded in the folder's journal, so the same command goes on from there."""
    try:
        return prepare_folder(folder, out, progress=progress, max_pixels=max_pixels)
    except KeyboardInterrupt:
        print(
            f"Ctrl-C: stopped while preparing {folder}; the images prepared so far are kept: run the same "
            "command again to go on",
            file=sys.stderr,
        )
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None


def _say_where_training_reads(folder: Path, prepared: Path) -> None:
    """Training reads only `<folder>.prepared` (data.use_prepared): an --out elsewhere needs a link,
    given as a command that works whatever is there now (`ln -s` onto an existing folder, or onto a
    link to one, would put the link inside it)."""
    default = prepared_dir(folder)
    if default.resolve() == Path(prepared).resolve():
        return
    link = f"ln -s {Path(prepared).resolve()} {default}"
    if default.is_symlink():
        link = f"ln -sfn {Path(prepared).resolve()} {default}"  # -n: replace the link itself
    elif default.exists():
        link = f"mv {default} {default}.old && {link}"
    print(f"note: training reads {default}, not {prepared}: link it, {link}")


if __name__ == "__main__":
    main()
