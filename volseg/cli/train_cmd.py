"""``volseg train``: train a UNet3D or a conditional 3D diffusion model into a run directory."""

from __future__ import annotations

from typing import Annotated

import typer

from volseg.cli._app import app
from volseg.cli._common import (DebugOpt, JsonOpt, OverwriteOpt, QuietOpt,
                                cli_errors, console, emit_json, guard_json, local_output)

_EXAMPLES = """
Examples:

  volseg train patches.zarr --model unet -o runs/unet --steps 400

  volseg train scroll.zarr --model unet --patch 64 -o runs/unet --amp --checkpoint

  volseg train scan.zarr --model diffusion --patch 32 -o runs/ddpm --config configs/diffusion3d.yml

  volseg train patches.zarr -o runs/unet --resume --steps 800

  volseg train a.zarr b.zarr c.zarr -o runs/many --val c.zarr --weights equal

  volseg train --images imagesTr/ --labels labelsTr/ --patch 64 -o runs/tifs --val-fraction 0.2

  torchrun --standalone --nproc-per-node 4 -m volseg train patches.zarr -o runs/ddp -b 2

  volseg train patches.zarr -o runs/unet --steps 1000 --tensorboard   # + optim.schedule: poly in --config
"""


@app.command("train", help="Train a model on a patch store or on volumes streamed in patches. "
             "Writes RUN_DIR/model.pt (last), best.pt (best validation), config.yml and "
             "metrics.jsonl. CLI flags override --config." + _EXAMPLES)
def train_command(
    data: Annotated[list[str] | None, typer.Argument(metavar="DATA...", help=(
        "Patch stores (PATCHES.zarr) or volumes (scroll.zarr with labels/, scan.zarr with "
        "target/) streamed with --patch; several are sampled together."))] = None,
    output: Annotated[str, typer.Option("--output", "-o", metavar="RUN_DIR", callback=local_output,
                                        help="Run directory to write.")] = ...,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", metavar="{unet,diffusion}",
        help="Model family (default: the config's model.type, else unet).")] = None,
    config: Annotated[str | None, typer.Option(
        "--config", "-c", metavar="CFG.yml", help="YAML config (see configs/).")] = None,
    amp: Annotated[bool | None, typer.Option(
        "--amp/--no-amp", help="Mixed precision: bf16 autocast on CPU, fp16 + GradScaler on "
        "CUDA.")] = None,
    checkpoint: Annotated[bool | None, typer.Option(
        "--checkpoint/--no-checkpoint", help="Gradient checkpointing of every block (less "
        "memory, more time).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1,
                                                 help="Optimisation steps in total.")] = None,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", min=1, help="Passes over the training patches (instead of --steps).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", "-b", min=1, help="Patches per step, per rank under torchrun/srun "
        "(the global batch is ranks x batch size).")] = None,
    global_batch_size: Annotated[int | None, typer.Option(
        "--global-batch-size", min=1, help="Patches per step over all ranks (instead of "
        "--batch-size); must divide by the number of ranks.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", min=0.0,
                                                help="Learning rate.")] = None,
    patch: Annotated[str | None, typer.Option(
        "--patch", metavar="N|DxHxW", help="Patch size when streaming from volumes; sides "
        "divisible by 2^depth.")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="auto, cpu, cuda or cuda:N (default auto).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", min=0, help="Random seed (default 0).")] = None,
    val_fraction: Annotated[float | None, typer.Option(
        "--val-fraction", help="Share held out for validation (default 0.1): of the volumes "
        "when there are several, else of the patches (store) or z slab (volume).")] = None,
    val: Annotated[list[str] | None, typer.Option(
        "--val", metavar="PATH", help="Validate on this store/volume only (repeatable); "
        "never trained on.")] = None,
    images: Annotated[str | None, typer.Option(
        "--images", metavar="DIR", help="Folder of image volumes streamed in patches, paired "
        "with --labels DIR by file name.")] = None,
    labels: Annotated[str | None, typer.Option("--labels", metavar="DIR",
                                               help="Folder of label volumes (with --images).")] = None,
    list_file: Annotated[str | None, typer.Option(
        "--list", metavar="PAIRS.csv|yml", help="Image/label pairs to stream (CSV or YAML).")] = None,
    weights: Annotated[str | None, typer.Option(
        "--weights", metavar="{size,equal}", help="Sampling across sources: by size (default) "
        "or equally.")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=0, help="DataLoader worker processes (default 0).")] = None,
    tensorboard: Annotated[bool | None, typer.Option(
        "--tensorboard/--no-tensorboard", help="Also write TensorBoard event files to "
        "RUN_DIR/tensorboard (needs the tensorboard package).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in RUN_DIR.")] = False,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    with cli_errors(debug, rank_zero=True):
        guard_json(json_out, inputs=[data, val, images, labels, list_file, config], outputs=[output])
        from volseg.data.mix import training_sources
        from volseg.ddp_env import is_secondary_rank
        from volseg.training import train
        from volseg.training.config import parse_patch

        overrides = {
            "training.amp": amp, "training.checkpoint": checkpoint, "training.n_iters": steps,
            "training.n_epochs": epochs, "training.batch_size": batch_size, "optim.lr": lr,
            "training.global_batch_size": global_batch_size,
            "data.patch": parse_patch(patch), "training.device": device, "training.seed": seed,
            "data.val_fraction": val_fraction, "data.workers": workers, "data.weights": weights,
            "training.tensorboard": tensorboard,
        }
        sources = training_sources(data, val=val, images=images, labels=labels, list_file=list_file)
        result = train(sources, output, model_type=model, config_path=config, overrides=overrides,
                       resume=resume, overwrite=overwrite, quiet=quiet)
        if is_secondary_rank():
            return  # under torchrun/srun rank 0 reports the run
        best = result["best_metric"]
        shown = "n/a" if best is None else f"{best:.4f}"
        console(quiet or json_out == "-").print(
            f"trained {result['model']} for {result['steps']} steps in {result['seconds']:.1f} s "
            f"on {result['device']}: loss {result['loss']:.4f}, best {result['metric']} {shown}"
            f" -> {result['run_dir']}", soft_wrap=True)
        emit_json(result, json_out)
