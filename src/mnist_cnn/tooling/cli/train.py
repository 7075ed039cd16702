"""Command line: train a model with a preset and save ``model.pt`` and ``metrics.json``.

Example: ``python -m mnist_cnn.train --preset default --epochs 3 --seed 1``

While training, ``<out>/last.pt`` holds a resumable checkpoint of the last finished epoch (rewritten
atomically after each one); once the run finishes it is replaced by ``model.pt``, which is resumable
too. Ctrl-C stops after the current batch, keeps ``last.pt`` and exits with status 130 (SIGTERM and
SIGHUP likewise, with 143 and 129); ``--resume <out>/last.pt`` then continues exactly where the last finished epoch left off.
Under ``torchrun --nproc_per_node=N`` the same command trains with ``DistributedDataParallel``.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_cnn import LAST_FILE, MODELS_DIR
from mnist_cnn.devices import DEVICE_CHOICES
from mnist_cnn.errors import ConfigError, TrainingDiverged, TrainingInterrupted
from mnist_cnn.presets import PRESETS, get_preset
from mnist_cnn.text import display_name, escape_text

# Only modules that import without torch: --help and usage errors answer before the heavy libraries load.
from mnist_cnn.tooling.cli.args import ArgumentParser, learning_rate, positive_int, run_cli, seed_int, thread_count

if TYPE_CHECKING:  # for annotations only: importing them here would load torch before --help can answer
    from mnist_cnn.config import TrainConfig
    from mnist_cnn.results import TrainResult
    from mnist_cnn.runs import RunOptions
    from mnist_cnn.tooling.runctl.controls import Controls
    from mnist_cnn.tooling.runctl.distributed import DistributedContext

SMOKE_TRAIN_SIZE = 2_000
SMOKE_VAL_SIZE = 1_000
SMOKE_TEST_SIZE = 1_000
DEFAULT_PRESET = "default"
DEFAULT_SEED = 42
#: The per-epoch resumable checkpoint, beside model.pt.
LAST_CHECKPOINT = LAST_FILE
EXIT_INTERRUPTED = 130


def build_parser() -> ArgumentParser:
    """The ``train`` command's arguments."""
    parser = ArgumentParser(prog="python -m mnist_cnn.train", description="Train a CNN on MNIST and save it.")
    # preset and seed are absent unless given (SUPPRESS), so that --resume can tell an explicit option from a default
    parser.add_argument("--preset", choices=list(PRESETS), default=argparse.SUPPRESS, help=f"training recipe (default: {DEFAULT_PRESET})")
    parser.add_argument("--epochs", type=positive_int, help="number of epochs (default: the preset's)")
    parser.add_argument("--batch-size", type=positive_int, help="training batch size (default: the preset's)")
    parser.add_argument("--lr", type=learning_rate, help="(peak) learning rate, finite, above 0 and at most 1e6 (default: the preset's)")
    parser.add_argument("--seed", type=seed_int, default=argparse.SUPPRESS, help=f"random seed, 0 to 2**63-1 (default: {DEFAULT_SEED})")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N")
    parser.add_argument("--data-dir", help="MNIST root holding MNIST/raw/ (default: $MNIST_DATA_DIR, else data/)")
    parser.add_argument("--out", type=Path, help="output directory (default: models/<preset>, or the --resume file's directory)")
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="CHECKPOINT",
        help="continue the run saved in this last.pt or model.pt, with its recorded settings "
        "(--epochs may raise the total for a constant learning rate)",
    )
    parser.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use deterministic kernels so a seed gives bit-identical results "
        "(default: on for the CPU, off for GPUs; when resuming: as recorded)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="start a new run even if --out holds another run's last.pt or model.pt (they are replaced)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"quick check on {SMOKE_TRAIN_SIZE} training, {SMOKE_VAL_SIZE} validation and {SMOKE_TEST_SIZE} test images, "
        "1 epoch unless --epochs says",
    )
    parser.add_argument(
        "--threads",
        type=thread_count,
        help="CPU threads: a number from 1 to this machine's cores, or 'adaptive' to give cores to other busy programs, "
        "checked every second (results then depend on the machine's load) (default: $MNIST_CNN_THREADS, else torch's count)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    return parser


def resume_command(checkpoint: Path, args: argparse.Namespace, world_size: int) -> str:
    """The exact command that continues a run from ``checkpoint`` with the same data and device."""
    launcher = ["python", "-m"] if world_size == 1 else ["torchrun", f"--nproc_per_node={world_size}", "-m"]
    words = [*launcher, "mnist_cnn.train", "--resume", str(checkpoint)]
    if args.data_dir:
        words += ["--data-dir", args.data_dir]
    if args.epochs is not None:  # needed when the checkpoint is a finished run being extended
        words += ["--epochs", str(args.epochs)]
    if args.device != "auto":
        words += ["--device", args.device]
    if args.deterministic is not None:
        words.append("--deterministic" if args.deterministic else "--no-deterministic")
    if args.quiet:
        words.append("--quiet")
    return shlex.join(words)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, train, save. Returns the exit status."""
    # the output folder's lock is held until main returns, however it returns
    with contextlib.ExitStack() as held:
        return _main(build_parser().parse_args(argv), held)


def _main(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    started = time.perf_counter()
    from mnist_cnn.tooling.runctl.controls import fit_controlled
    from mnist_cnn.tooling.runctl.distributed import context_from_env, destroy_process_group
    from mnist_cnn.tooling.runctl.rundir import claim_run_folder, ensure_writable_dir
    from mnist_cnn.tooling.runctl.signals import StopOnRequest, StopRequest
    from mnist_cnn.tooling.safety.mnist_files import ensure_mnist

    context = context_from_env()
    options, controls, config = run_options(args, context)
    ensure_mnist(args.data_dir)  # the four files there and matching the published MD5s, before anything is written
    out = ensure_writable_dir(controls.checkpoint.parent)  # fail before training, not after
    if context.is_main:  # one live run per folder, and never over another run's files without --overwrite
        held.enter_context(claim_run_folder(out, resume=args.resume, overwrite=args.overwrite))
    if not options.quiet:
        print(describe(config, context.world_size))
    try:
        # under torchrun the launcher forwards Ctrl-C, so a second signal must not abort the save; the final save
        # is inside the block too, so a signal while model.pt is written waits until it is complete
        with StopRequest(repeat_interrupts=not context.enabled, linger=True) as stop:
            result = fit_controlled(config, options, controls, [StopOnRequest(stop, context)])
            if context.is_main:
                save_finished_run(result, out, started)
    except TrainingInterrupted as error:
        if context.is_main:
            print(_interrupted_message(error, args, context.world_size), file=sys.stderr)
        return stop.exit_status  # 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
    except TrainingDiverged as error:
        raise _diverged(error) from None
    finally:
        destroy_process_group(context)
    if stop.requested and context.is_main:
        print(f"{stop.signal_name} arrived while the result was being saved; the run is finished and saved", file=sys.stderr)
    return 0


def run_options(args: argparse.Namespace, context: DistributedContext) -> tuple[RunOptions, Controls, TrainConfig]:
    """The options, controls and configuration the arguments ask for: a resumed run or a new one."""
    from mnist_cnn.checkpoint import load_checkpoint
    from mnist_cnn.devices import select_device
    from mnist_cnn.runs import RunOptions
    from mnist_cnn.tooling.runctl.controls import Controls
    from mnist_cnn.tooling.runctl.distributed import device_for
    from mnist_cnn.tooling.runctl.resume import resume_config, training_state_of
    from mnist_cnn.tooling.safety.safe_load import read_checkpoint_file

    preset, seed = getattr(args, "preset", None), getattr(args, "seed", None)
    checkpoint, deterministic = None, args.deterministic
    if args.resume is not None:
        if args.smoke:
            raise ConfigError("--smoke cannot be combined with --resume: a resumed run keeps its recorded settings")
        checkpoint = load_checkpoint(args.resume, reader=read_checkpoint_file)  # says what is wrong with a corrupt or mismatched file
        config = resume_config(
            checkpoint,
            epochs=args.epochs,
            finishing=args.resume.name == LAST_CHECKPOINT,
            preset=preset,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=seed,
        )
        if deterministic is None:
            deterministic = training_state_of(checkpoint).get("deterministic")
        out_dir = args.out or args.resume.parent
    else:
        config = new_config(
            preset or DEFAULT_PRESET, args.epochs, args.batch_size, args.lr, DEFAULT_SEED if seed is None else seed, args.smoke
        )
        out_dir = args.out or MODELS_DIR / config.preset
    options = RunOptions(
        data_dir=args.data_dir,
        device=device_for(context, select_device(args.device)),
        quiet=args.quiet or not context.is_main,
        deterministic=deterministic,
    )
    controls = Controls(threads=args.threads, checkpoint=Path(out_dir) / LAST_CHECKPOINT, resume=checkpoint, context=context)
    return options, controls, config


def new_config(preset: str, epochs: int | None, batch_size: int | None, lr: float | None, seed: int, smoke: bool) -> TrainConfig:
    """The preset with the options given on the command line; ``smoke``: a small, quick version of it."""
    overrides: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    if smoke:
        overrides.update(epochs=epochs or 1, train_size=SMOKE_TRAIN_SIZE, val_size=SMOKE_VAL_SIZE, test_size=SMOKE_TEST_SIZE)
        if PRESETS[preset].pipeline == "torchvision":
            overrides["pipeline"] = "memory"
    return get_preset(preset, **overrides)


def describe(config: TrainConfig, world_size: int) -> str:
    """One line saying what is about to be trained."""
    return (
        f"training preset {config.preset!r}: {config.arch} {config.model_options}, {config.epochs} epoch(s), "
        f"batch {config.batch_size}, {config.optimizer} lr {config.lr}, seed {config.seed}"
        + (f", {world_size} processes" if world_size > 1 else "")
    )


def save_finished_run(result: TrainResult, out: Path, started: float) -> None:
    """Write ``model.pt`` and ``metrics.json``, remove the per-epoch ``last.pt``, and print the results."""
    from mnist_cnn.results import save_run

    model_path, metrics_path = save_run(result, out, {"total_seconds": time.perf_counter() - started})
    # model.pt now holds the same resumable state, so the per-epoch file would only be a stale duplicate
    (out / LAST_CHECKPOINT).unlink(missing_ok=True)
    m = result.metrics
    print(
        f"validation accuracy {m['val_accuracy']:.4f}, loss {m['val_loss']:.4f}; "
        f"test accuracy {m['test_accuracy']:.4f}, loss {m['test_loss']:.4f}; "
        f"training {m['train_seconds']:.1f}s on {m['device']} ({m['precision']})"
    )
    print(f"saved {display_name(model_path)} and {display_name(metrics_path)}")  # an --out may hold escapes or line breaks


def _diverged(error: TrainingDiverged) -> TrainingDiverged:
    where = (
        f"the last good checkpoint is {error.checkpoint_path} (after epoch {error.checkpoint_epoch})"
        if error.checkpoint_path is not None
        else "no checkpoint was saved"
    )
    return TrainingDiverged(
        f"training diverged in epoch {error.epoch}: the loss became NaN or infinite; "
        f"the learning rate is probably too high (try a smaller --lr); {where}",
        epoch=error.epoch,
    )


def _interrupted_message(error: TrainingInterrupted, args: argparse.Namespace, world_size: int) -> str:
    """The one line printed when training stops on a signal; what the user typed (the paths) is escaped."""
    if error.checkpoint_path is None:
        return f"interrupted in epoch {error.epoch} before any checkpoint was saved; nothing to resume"
    return escape_text(
        f"interrupted in epoch {error.epoch}: its partial progress is discarded and {display_name(error.checkpoint_path)} holds the "
        f"state after epoch {error.checkpoint_epoch}; resume with: {resume_command(error.checkpoint_path, args, world_size)}"
    )


def console_main() -> int:
    """Entry point of the installed console script: user errors become one line and a non-zero status."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(console_main())
