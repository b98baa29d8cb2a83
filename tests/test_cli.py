import json

from torch_stgen.cli import main


def test_baseline_command_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["baseline", "--height", "8", "--width", "8", "--days", "8",
                 "--patterns", "fixed:0.25,block", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| interp+dist | fixed | 0.250 |" in printed
    rows = json.loads(out.read_text())
    assert [r["pattern"] for r in rows] == ["fixed", "block"]
    assert rows[1]["ratio"] == 0.25                      # lower-right quarter
    assert all(r["mae"] > 0 and r["rmse"] >= r["mae"] for r in rows)


def test_run_passes_device_and_plot_dir_to_both_demos(tmp_path, monkeypatch):
    """`torch-stgen run --device ... --plot-dir DIR` reaches each demo (the demos themselves
    run in tests/experiments with tiny settings)."""
    import torch_stgen.experiments.diffrecon as dr
    import torch_stgen.experiments.kgdiff as kg
    from torch_stgen import cli
    calls = {}

    def fake(name):
        def demo(seed, progress, device, plot):
            calls[name] = (seed, progress, device, plot)
            return [{"dataset": "synthetic", "method": name, "mae": 1.0}]
        return demo

    monkeypatch.setattr(dr, "run_demo", fake("diffrecon"))
    monkeypatch.setattr(kg, "run_demo", fake("kgdiff"))
    out = tmp_path / "rows.json"
    assert cli.main(["run", "--seed", "3", "--no-progress", "--device", "cpu",
                     "--plot-dir", str(tmp_path / "figs"), "--out", str(out)]) == 0
    assert calls == {"diffrecon": (3, False, "cpu", str(tmp_path / "figs" / "diffrecon_demo.png")),
                     "kgdiff": (3, False, "cpu", str(tmp_path / "figs" / "kgdiff_demo.png"))}
    assert cli.main(["run", "--model", "kgdiff", "--no-progress"]) == 0
    assert calls["kgdiff"][3] is None                      # no --plot-dir: no figures
