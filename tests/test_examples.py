"""The scripts in examples/ run end to end (tiny settings), so that they cannot rot."""
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(monkeypatch, capsys, name, *argv):
    monkeypatch.setattr(sys, "argv", [name] + list(argv))
    n_threads = torch.get_num_threads()
    try:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    finally:
        torch.set_num_threads(n_threads)
    return capsys.readouterr().out


@pytest.mark.parametrize("name", ["layers_st_point.py", "layers_times.py",
                                  "layers_geometry_moe.py", "custom_conditioner.py"])
def test_layer_and_conditioner_examples_run(monkeypatch, capsys, name):
    out = _run(monkeypatch, capsys, name, "--steps", "3")
    assert out.strip(), f"{name} printed nothing"
    assert "nan" not in out.lower()


def test_reconstruct_and_plot_example(monkeypatch, capsys, tmp_path):
    pytest.importorskip("matplotlib", reason="the example draws with the 'viz' extra")
    png = tmp_path / "rec.png"
    out = _run(monkeypatch, capsys, "reconstruct_and_plot.py", "--steps", "10", "--days",
               "6", "--size", "8", "--device", "cpu", "--out", str(png))
    found = re.search(r"DiffRecon ([0-9.]+), interpolation baseline ([0-9.]+)", out)
    assert found, out
    assert all(0 < float(v) < 1e3 for v in found.groups())
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_distributed_example_under_torchrun(tmp_path):
    import shutil
    import subprocess
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    cmd = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    out = tmp_path / "w.pt"
    proc = subprocess.run(cmd + ["--standalone", "--nproc_per_node", "2",
                                 str(EXAMPLES / "distributed_training.py"), "--steps", "10",
                                 "--days", "6", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    found = re.search(r"ranks 2: .* MAE on (\d+) test hours ([0-9.]+)", proc.stdout)
    assert found, proc.stdout
    assert int(found.group(1)) == 36 and 0 < float(found.group(2)) < 1e3
    assert set(torch.load(out, weights_only=True)) >= {"fine_mean", "fine_std"}


def test_custom_conditioner_example_resumes_from_its_checkpoint(monkeypatch, capsys,
                                                                 tmp_path):
    import torch_stgen.diffusion as diffusion
    real, calls = diffusion.diffusion_loss, []

    class Cut(Exception):
        pass

    def counted(*args, cut_at=None, **kwargs):
        calls.append(1)
        if cut_at is not None and len(calls) > cut_at:
            raise Cut()
        return real(*args, **kwargs)

    def run(*argv, cut_at=None):
        calls.clear()               # the example imports diffusion_loss when it runs
        monkeypatch.setattr(diffusion, "diffusion_loss",
                            lambda *a, **k: counted(*a, cut_at=cut_at, **k))
        return _run(monkeypatch, capsys, "custom_conditioner.py", "--steps", "6", *argv)

    ckpt = tmp_path / "run.pt"
    plain = run()
    with pytest.raises(Cut):                         # killed during iteration 5
        run("--checkpoint", str(ckpt), "--checkpoint-every", "2", cut_at=4)
    assert torch.load(ckpt, weights_only=True)["iteration"] == 4
    resumed = run("--checkpoint", str(ckpt), "--checkpoint-every", "2")
    assert len(calls) == 2                           # iterations 4 and 5 only
    written = ckpt.read_bytes()
    again = run("--checkpoint", str(ckpt), "--checkpoint-every", "2")
    assert len(calls) == 0 and ckpt.read_bytes() == written   # finished: nothing trained
    mae = [re.search(r"MAE on the last two days: ([0-9.]+) .*loss ([0-9.]+) -> ([0-9.]+)",
                     o).groups() for o in (plain, resumed, again)]
    assert mae[0] == mae[1] == mae[2], mae


def test_kgdiff_weather_conditioner_example(monkeypatch, capsys):
    pytest.importorskip("pykeen", reason="the example pre-trains TuckER (the 'kg' extra)")
    out = _run(monkeypatch, capsys, "kgdiff_weather_conditioner.py", "--steps", "4",
               "--tucker-epochs", "1")
    assert "9 weekdays, rain on 5 of them; 140 training sensors, 60 unseen ones" in out
    rows = re.findall(r"\| (KGDiff[^|]*) \| ([-+0-9.]+) \| ([-+0-9.]+) \| ([-+0-9.]+) \| "
                      r"([0-9.]+) \| ([0-9.]+) \|", out)
    assert [r[0].strip() for r in rows] == ["KGDiff", "KGDiff + DayRain, no rain",
                                            "KGDiff + DayRain"], out
    for r in rows:
        assert all(abs(float(v)) < 1e3 for v in r[1:])
        assert abs(float(r[3]) - (float(r[1]) - float(r[2]))) < 2e-3   # rain - dry bias


def test_kgdiff_weather_example_pairs_every_training_row_with_its_days_rain():
    import numpy as np
    from torch_stgen.data import SyntheticCity
    ns = runpy.run_path(str(EXAMPLES / "kgdiff_weather_conditioner.py"))
    city = SyntheticCity(seed=0, height=16, width=16, days=14, num_sensors=200)
    data = ns["weekday_weather"](city)
    values, rain, train = data["values"], data["rain"], data["train"]
    D, L = rain.shape
    n = train.numel()
    stamps = city.roads.timestamps
    for d in range(D):
        rows = slice(d * n, (d + 1) * n)
        assert torch.equal(data["nodes"][rows], train)
        assert torch.equal(data["x"][rows], values[d, train])
        assert torch.equal(data["rain_rows"][rows], rain[d].expand(n, L))
    # each kept weekday's rain, looked up step by step from the timestamps
    day_of_step = stamps.astype("datetime64[D]")
    holidays = {np.datetime64(h, "D") for h in city.roads.meta.get("holidays", [])}
    kept = [dt for dt in np.unique(day_of_step)
            if dt.item().weekday() < 5 and dt not in holidays]
    assert len(kept) == D and len(holidays) > 0
    for d, dt in enumerate(kept):
        assert torch.equal(rain[d], city.roads.ext[np.nonzero(day_of_step == dt)[0], 1])
