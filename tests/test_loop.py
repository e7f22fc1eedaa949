"""Training loop pieces: a resumable index stream, rank slices of global batches, the EMA."""

import itertools

import torch
from torch import nn

from volseg.training.loop import EMA, RankSlice, StreamSampler


def test_stream_resumes_where_it_stopped():
    whole = list(itertools.islice(StreamSampler(5, seed=2), 12))
    assert sorted(whole[:5]) == [0, 1, 2, 3, 4] and sorted(whole[5:10]) == [5, 6, 7, 8, 9]
    assert list(itertools.islice(StreamSampler(5, seed=2, start=7), 5)) == whole[7:12]


def test_rank_slices_partition_each_global_batch():
    stream = list(itertools.islice(StreamSampler(8, seed=0), 16))
    parts = [list(itertools.islice(RankSlice(StreamSampler(8, seed=0), batch_size=2, rank=r, world=2), 4))
             for r in range(2)]
    assert parts[0] == stream[0:2] + stream[4:6] and parts[1] == stream[2:4] + stream[6:8]


def test_ema_warms_up_towards_the_weights():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, rate=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # decay min(0.999, 2 / 11)
    assert abs(float(ema.module.weight) - 9 / 11) < 1e-6 and not ema.module.weight.requires_grad
