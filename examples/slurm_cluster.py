"""Predict a whole scroll on SLURM through dask-jobqueue (``pip install dask-jobqueue``).

Run on the login node: ``python examples/slurm_cluster.py``. Each SLURM job is one Dask worker
with a GPU; volseg sends one task per output chunk and the workers load the model once each.
"""

from dask_jobqueue import SLURMCluster

import volseg

if __name__ == "__main__":
    cluster = SLURMCluster(cores=8, processes=1, memory="32GB", walltime="04:00:00",
                           job_extra_directives=["--gres=gpu:1"])
    cluster.scale(jobs=16)
    summary = volseg.predict("runs/unet", "scroll.zarr", "prediction.zarr",
                             volseg.PredictSettings.parse(stitch=True, patch=64, device="auto"),
                             execution=volseg.Execution.parse(scheduler=cluster.scheduler_address))
    print(summary)
    cluster.close()
