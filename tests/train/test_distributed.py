"""Data-parallel training under torchrun (two gloo ranks on the CPU): gradients are the
ranks' mean, every rank ends with the same weights, the ranks draw different batches, and a
run cut off and resumed ends exactly where an uninterrupted data-parallel run ends."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torch_stgen.train import all_gather_cat, get_world_size, setup_distributed, shard

HERE = Path(__file__).resolve().parent


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    cmd = ([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"])
    proc = subprocess.run(cmd + ["--standalone", "--nproc_per_node", "2",
                                 str(HERE / "_ddp_worker.py"), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)], out


def test_two_ranks_average_their_gradients(ranks):
    (r0, r1), _ = ranks
    assert r0["world"] == r1["world"] == 2 and r0["device"] == "cpu"
    torch.testing.assert_close(r0["lin_weight"], r1["lin_weight"], rtol=0, atol=0)
    assert not torch.allclose(r0["local_grad"], r1["local_grad"])   # different data
    mean = (r0["local_grad"] + r1["local_grad"]) / 2
    torch.testing.assert_close(r0["ddp_grad"], mean)
    torch.testing.assert_close(r1["ddp_grad"], mean)


def test_ranks_draw_their_own_batches_and_end_identical(ranks):
    (r0, r1), _ = ranks
    assert len(r0["kg_loss"]) == 8 and r0["kg_loss"] != r1["kg_loss"]
    _same(r0["kg_plain"], r1["kg_plain"])               # KGDiff, EMA weights included
    _same(r0["dr_plain"], r1["dr_plain"])               # DiffRecon, both stages
    assert r0["dr_curve"] == r1["dr_curve"]             # averaged validation losses


def test_resumed_data_parallel_runs_match_uninterrupted_ones(ranks):
    (r0, r1), out = ranks
    for r in (r0, r1):
        _same(r["kg_resumed"], r["kg_plain"])
        assert r["kg_resumed_loss"] == r["kg_loss"]     # each rank's own stream continued
        _same(r["dr_resumed"], r["dr_plain"])
    kg = torch.load(out / "kg.pt", weights_only=True)
    assert kg["fingerprint"]["world_size"] == 2 and len(kg["ranks"]) == 2
    assert not torch.equal(kg["ranks"][0]["gen"], kg["ranks"][1]["gen"])
    dr = torch.load(out / "dr.pt", weights_only=True)
    assert dr["iteration"] == 12 and len(dr["ranks"]) == 2


def test_ranks_given_different_data_are_refused_by_name(ranks):
    (r0, r1), _ = ranks
    for r in (r0, r1):
        assert "different runs (x: [" in r["mismatch"], r.get("mismatch")
        assert "same data" in r["mismatch"]
        assert "different runs (checkpoint: [" in r["own_file"] and "own1.pt" in r["own_file"]


def test_a_diverging_rank_stops_every_rank(ranks):
    (r0, r1), _ = ranks
    for r in (r0, r1):
        assert "KGDiff train diverged" in r["diverged"] and "gradient norms [nan]" in r["diverged"]


def test_sharded_results_gather_in_order(ranks):
    (r0, r1), _ = ranks
    expected = torch.arange(7) * 10
    torch.testing.assert_close(r0["gathered"], expected)
    torch.testing.assert_close(r1["gathered"], expected)


def test_single_process_is_untouched(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert setup_distributed(backend="gloo") == torch.device("cpu")
    assert get_world_size() == 1 and shard([1, 2, 3]) == [1, 2, 3]
    x = torch.arange(3)
    assert all_gather_cat(x) is x


def test_setup_names_missing_launcher_variables(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc_per_node 2"):
        setup_distributed()


def test_throughput_benchmark_under_torchrun(tmp_path):
    """benchmarks/distributed.py under two ranks: rank 0 writes one row per model with the
    world size and the throughput of both ranks' samples, merged with earlier rows."""
    import json
    out = tmp_path / "d.json"
    out.write_text(json.dumps([{"model": "kgdiff", "world_size": 1, "threads_per_rank": 1,
                                "batch_per_rank": 32, "steps": 2, "seconds": 1.0,
                                "samples_per_s": 64.0, "final_loss": 1.0}]))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    cmd = ([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"])
    script = HERE.parents[1] / "benchmarks" / "distributed.py"
    proc = subprocess.run(cmd + ["--standalone", "--nproc_per_node", "2", str(script),
                                 "--steps", "2", "--joint-steps", "1", "--batch-size", "4",
                                 "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads(out.read_text())
    assert [(r["model"], r["world_size"]) for r in rows] == [
        ("kgdiff", 1), ("diffrecon", 2), ("kgdiff", 2)]
    for r in rows[1:]:
        assert r["samples_per_s"] == pytest.approx(2 * 4 * r["steps"] / r["seconds"])
    assert rows[1]["steps"] == 3 and rows[2]["steps"] == 2
    assert "| kgdiff | 2 | 1 | 4 | 2 |" in proc.stdout     # printed once, by rank 0
    assert proc.stdout.count("| model |") == 1
