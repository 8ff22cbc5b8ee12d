"""Guards for what a refactor of ``utils.distributed`` breaks without a sound, on two ranks (gloo, 127.0.0.1):

- the all-reduce written by hand *averages* the ranks' gradients: the gradient norm rank 0 logs equals the one
  process's with the whole batch (a sum would double it, and clipping at 1.0 with AdamW would hide the double
  in the weights and the losses, which is all the other tests compare);
- only rank 0 writes the run: every event file of it carries rank 0's process id in its name (every rank
  logs the same all-reduced mean, so the values cannot tell which process wrote them).
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from utils import distributed, tb, torchrun

pytestmark = pytest.mark.slow

SMALL = dict(steps=3, global_batch=4, block_size=16, n_layer=1, n_embd=32, mode="by-hand")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same small run twice, both logged: one process with the whole batch, and two launched ranks."""
    folder = tmp_path_factory.mktemp("distributed_guards")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BOOK_RUNS_DIR", str(folder / "runs"))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            distributed.train_distributed(torchrun.from_flags({**SMALL, "log_run": "t/one"}))
        finally:
            torch.set_num_threads(threads)
        torchrun.launch(2, torchrun.from_flags({**SMALL, "log_run": "t/two",
                                                "summary_out": str(folder / "two.json")}))
    return folder / "runs" / "t", json.loads((folder / "two.json").read_text())


def test_the_ranks_gradient_is_the_average_not_the_sum(runs):
    folder, summary = runs
    assert summary["world_size"] == 2
    one = tb.read_scalars(folder / "one", ["train/grad_norm"]).value.to_numpy()
    two = tb.read_scalars(folder / "two", ["train/grad_norm"]).value.to_numpy()
    assert len(one) == len(two) == SMALL["steps"]
    assert two == pytest.approx(one, rel=1e-4)


def test_only_rank_0_writes_the_run(runs):
    folder, summary = runs
    pids = summary["pid_per_rank"]
    assert len(pids) == 2 and pids[0] != pids[1]
    files = sorted((folder / "two").glob("events.out.tfevents.*"))
    # names end in .<pid, 7 digits>.<writer serial>[.<file serial>] (utils.tb.open_run, RunWriter.flush)
    writers = {int(re.search(r"\.(\d{7})\.\d{6}(?:\.\d{6})?$", p.name).group(1)) for p in files}
    assert writers == {pids[0]}, [p.name for p in files]
