"""Rank, world size and local rank from torchrun or srun variables."""

from volseg.ddp_env import LaunchEnv, is_secondary_rank, launch_env, secondary_exit_delay


def test_launchers():
    assert launch_env({}) == LaunchEnv()
    assert launch_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == LaunchEnv(2, 4, 0, "torchrun")
    slurm = {"SLURM_STEP_ID": "0", "SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}
    assert launch_env(slurm) == LaunchEnv(5, 8, 1, "slurm")
    assert launch_env({"SLURM_NTASKS": "8", "SLURM_PROCID": "5"}) == LaunchEnv()  # an allocation, no step
    assert is_secondary_rank(slurm) and not is_secondary_rank({"WORLD_SIZE": "2", "RANK": "0"})
    assert secondary_exit_delay({"VOLSEG_DDP_ERROR_DELAY": "bad"}) == 5.0
    assert secondary_exit_delay({"VOLSEG_DDP_ERROR_DELAY": "-1"}) == 0.0
