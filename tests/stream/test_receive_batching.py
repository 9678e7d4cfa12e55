"""A middle stage's batch takes the waiting messages of its inputs in turn (one per stream per round),
so one busy stream cannot fill a batch while others wait: the detector batches across streams."""
from __future__ import annotations

import multiprocessing
from multiprocessing import Pipe

from posestream.stream.core.config import load_config
from posestream.stream.metrics import counters_size
from posestream.stream.stage_runtime import EndOfStream, StageContext, StageRuntime


def _runtime() -> StageRuntime:
    ctx = multiprocessing.get_context("spawn")
    control, _ = Pipe()
    return StageRuntime(StageContext("detect", 0, ctx.RawArray("d", counters_size(1)), control,
                                     ctx.Event(), ctx.Event(), load_config(), 0.05))


def test_batch_takes_streams_in_turn_and_ends_a_stream_at_its_marker() -> None:
    rt = _runtime()
    pipes = [Pipe(duplex=False) for _ in range(3)]
    for stream, (_, send) in enumerate(pipes):
        for frame in range(4 if stream == 0 else 2):
            send.send((stream, frame))
    pipes[2][1].send(EndOfStream(2, "s2", 2))
    pipes[2][1].send((2, 99))  # after its end marker: never in the same batch
    inputs = [recv for recv, _ in pipes]
    first = rt.receive(inputs, 4)
    assert sorted(m[0] for m in first[:3]) == [0, 1, 2] and len(first) == 4  # one of each, then more
    rest = rt.receive(inputs, 16)
    everything = first + rest
    assert [m for m in everything if isinstance(m, EndOfStream)] and (2, 99) not in everything
    per_stream = {s: [m[1] for m in everything if not isinstance(m, EndOfStream) and m[0] == s] for s in range(3)}
    assert per_stream == {0: [0, 1, 2, 3], 1: [0, 1], 2: [0, 1]}  # each stream's order kept
    assert rt.receive(inputs, 16) == [(2, 99)]
