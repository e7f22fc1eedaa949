"""``volseg train``: train a UNet3D or a conditional 3D diffusion model into a run directory."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from volseg.cli._app import app
from volseg.cli._bundles import Bundle, bundled
from volseg.cli._common import JsonOpt, OverwriteOpt, QuietOpt, done, guard_json, local_output

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


def _overrides(patch: str | None = None, **values) -> dict:
    """The config keys the flags override (None: not given, the config's or the default value holds)."""
    from volseg.training.config import parse_patch

    return {**{key: values[name] for name, key in _KEYS.items()}, "data.patch": parse_patch(patch)}


_KEYS = {"amp": "training.amp", "checkpoint": "training.checkpoint", "steps": "training.n_iters",
         "epochs": "training.n_epochs", "batch_size": "training.batch_size", "lr": "optim.lr",
         "global_batch_size": "training.global_batch_size", "device": "training.device", "seed": "training.seed",
         "val_fraction": "data.val_fraction", "workers": "data.workers", "weights": "data.weights",
         "tensorboard": "training.tensorboard"}

#: The flags that override keys of the run's config (``--config`` < flags).
OVERRIDES = Bundle((
    ("amp", Annotated[Optional[bool], typer.Option(
        "--amp/--no-amp", help="Mixed precision: bf16 autocast on CPU, fp16 + GradScaler on CUDA.")], None),
    ("checkpoint", Annotated[Optional[bool], typer.Option(
        "--checkpoint/--no-checkpoint", help="Gradient checkpointing of every block (less memory, more time).")], None),
    ("steps", Annotated[Optional[int], typer.Option("--steps", min=1, help="Optimisation steps in total.")], None),
    ("epochs", Annotated[Optional[int], typer.Option(
        "--epochs", min=1, help="Passes over the training patches (instead of --steps).")], None),
    ("batch_size", Annotated[Optional[int], typer.Option(
        "--batch-size", "-b", min=1, help="Patches per step, per rank under torchrun/srun "
        "(the global batch is ranks x batch size).")], None),
    ("global_batch_size", Annotated[Optional[int], typer.Option(
        "--global-batch-size", min=1, help="Patches per step over all ranks (instead of "
        "--batch-size); must divide by the number of ranks.")], None),
    ("lr", Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Learning rate.")], None),
    ("patch", Annotated[Optional[str], typer.Option(
        "--patch", metavar="N|DxHxW", help="Patch size when streaming from volumes; sides divisible by 2^depth.")],
     None),
    ("device", Annotated[Optional[str], typer.Option(
        "--device", help="auto, cpu, cuda or cuda:N (default auto).")], None),
    ("seed", Annotated[Optional[int], typer.Option("--seed", min=0, help="Random seed (default 0).")], None),
    ("val_fraction", Annotated[Optional[float], typer.Option(
        "--val-fraction", help="Share held out for validation (default 0.1): of the volumes "
        "when there are several, else of the patches (store) or z slab (volume).")], None),
    ("weights", Annotated[Optional[str], typer.Option(
        "--weights", metavar="{size,equal}", help="Sampling across sources: by size (default) or equally.")], None),
    ("workers", Annotated[Optional[int], typer.Option(
        "--workers", min=0, help="DataLoader worker processes (default 0).")], None),
    ("tensorboard", Annotated[Optional[bool], typer.Option(
        "--tensorboard/--no-tensorboard", help="Also write TensorBoard event files to "
        "RUN_DIR/tensorboard (needs the tensorboard package).")], None),
), _overrides)

DataArg = Annotated[Optional[list[str]], typer.Argument(metavar="DATA...", help=(
    "Patch stores (PATCHES.zarr) or volumes (scroll.zarr with labels/, scan.zarr with "
    "target/) streamed with --patch; several are sampled together."))]
RunDirOpt = Annotated[str, typer.Option("--output", "-o", metavar="RUN_DIR", callback=local_output,
                                        help="Run directory to write.")]
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", metavar="{unet,diffusion}", help="Model family (default: the config's model.type, else unet).")]
ConfigOpt = Annotated[Optional[str], typer.Option("--config", "-c", metavar="CFG.yml", help="YAML config (see configs/).")]
ValOpt = Annotated[Optional[list[str]], typer.Option(
    "--val", metavar="PATH", help="Validate on this store/volume only (repeatable); never trained on.")]
ImagesOpt = Annotated[Optional[str], typer.Option(
    "--images", metavar="DIR", help="Folder of image volumes streamed in patches, paired with --labels DIR by file name.")]
LabelsOpt = Annotated[Optional[str], typer.Option("--labels", metavar="DIR", help="Folder of label volumes (with --images).")]
ListOpt = Annotated[Optional[str], typer.Option(
    "--list", metavar="PAIRS.csv|yml", help="Image/label pairs to stream (CSV or YAML).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run in RUN_DIR.")]


@app.command("train", help="Train a model on a patch store or on volumes streamed in patches. "
             "Writes RUN_DIR/model.pt (last), best.pt (best validation), config.yml and "
             "metrics.jsonl. CLI flags override --config." + _EXAMPLES)
@bundled(overrides=OVERRIDES, rank_zero=True)
def train_command(data: DataArg = None, output: RunDirOpt = ..., model: ModelOpt = None, config: ConfigOpt = None,
                  val: ValOpt = None, images: ImagesOpt = None, labels: LabelsOpt = None, list_file: ListOpt = None,
                  resume: ResumeOpt = False, overwrite: OverwriteOpt = False, json_out: JsonOpt = None,
                  quiet: QuietOpt = False, *, overrides: dict) -> None:
    from volseg.data.mix import training_sources
    from volseg.ddp_env import is_secondary_rank
    from volseg.training import train

    guard_json(json_out, inputs=[data, val, images, labels, list_file, config], outputs=[output])
    sources = training_sources(data, val=val, images=images, labels=labels, list_file=list_file)
    result = train(sources, output, model_type=model, config_path=config, overrides=overrides,
                   resume=resume, overwrite=overwrite, quiet=quiet)
    if is_secondary_rank():
        return  # under torchrun/srun rank 0 reports the run
    best = result["best_metric"]
    shown = "n/a" if best is None else f"{best:.4f}"
    done(result, json_out, f"trained {result['model']} for {result['steps']} steps in {result['seconds']:.1f} s "
         f"on {result['device']}: loss {result['loss']:.4f}, best {result['metric']} {shown} -> {result['run_dir']}",
         quiet=quiet)
