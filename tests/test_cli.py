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
