import json

import pytest

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


def test_baseline_command_takes_a_block_with_bounds(tmp_path):
    out = tmp_path / "rows.json"
    assert main(["baseline", "--height", "8", "--width", "8", "--days", "8",
                 "--patterns", "block:0,2,0,4,fixed:0.25", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["pattern"], r["ratio"]) for r in rows] == [("block", 0.5), ("fixed", 0.25)]


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


SMALL = ["baseline", "--height", "8", "--width", "8", "--days", "8"]


@pytest.mark.parametrize("extra, message", [
    (["--factor", "0"], r"--factor must be a positive integer \(got 0\)"),
    (["--factor", "3"], "--factor 3 must divide --height 8 and --width 8"),
    (["--height", "0"], r"--height must be a positive integer \(got 0\)"),
    (["--days", "-1"], r"--days must be a positive integer \(got -1\)"),
    (["--seed", "-1"], "--seed must be a non-negative integer"),
    (["--patterns", "fixed:0.2,nonsense"],
     "--patterns: 'nonsense' is not a pattern on the 4x4 coarse grid"),
    (["--patterns", "fixed:1.5"], r"--patterns: 'fixed:1.5'.*'ratio' must be in \[0, 1\)"),
    (["--patterns", "random:abc"], "--patterns: 'random:abc'.*must be a number"),
    (["--patterns", ","], "--patterns must name at least one pattern"),
])
def test_baseline_refuses_bad_flags_before_computing(capsys, extra, message):
    """Errors used to be tracebacks naming internal arguments ('spec', 'x', 'factor'), and
    a bad pattern was found only after the earlier patterns had run."""
    import re
    with pytest.raises(SystemExit) as exc:
        main(SMALL + extra)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert re.search(message, captured.err), captured.err
    assert "torch-stgen baseline: error:" in captured.err
    assert captured.out == ""                       # nothing computed, nothing printed


def test_out_folder_is_made_before_computing(tmp_path, capsys, monkeypatch):
    """`--out /missing/dir/x.json` crashed after the computation and lost the rows."""
    out = tmp_path / "new" / "dir" / "rows.json"
    assert main(SMALL + ["--patterns", "block", "--out", str(out)]) == 0
    assert [r["pattern"] for r in json.loads(out.read_text())] == ["block"]
    capsys.readouterr()
    a_file = tmp_path / "afile"
    a_file.write_text("")
    for bad in (a_file / "rows.json", tmp_path):      # under a file; a directory
        with pytest.raises(SystemExit):
            main(SMALL + ["--patterns", "block", "--out", str(bad)])
        captured = capsys.readouterr()
        assert "--out" in captured.err and captured.out == ""
    # `run` checks --out and --plot-dir before the (minutes-long) demos
    import torch_stgen.experiments.diffrecon as dr
    import torch_stgen.experiments.kgdiff as kg

    def boom(**kwargs):
        raise AssertionError("a demo ran before the output paths were checked")

    monkeypatch.setattr(dr, "run_demo", boom)
    monkeypatch.setattr(kg, "run_demo", boom)
    for flags in (["--out", str(a_file / "rows.json")], ["--plot-dir", str(a_file / "figs")]):
        with pytest.raises(SystemExit):
            main(["run", "--no-progress"] + flags)
        assert flags[0] in capsys.readouterr().err
