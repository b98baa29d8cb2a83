"""Argument checks of the benchmark scripts and the experiment entry points: every bad
value is refused by name (argparse's ``error`` for a command line), before any long
computation and before any file is written."""
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_script(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}",
                                                  ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tiny_kg_file(tmp_path, n=60):
    path = tmp_path / "kg.txt"
    path.write_text("".join(f"e{i % 12}\tr{i % 2}\te{(i * 5 + 1) % 12}\n" for i in range(n)))
    return path


def _run_script(mod, monkeypatch, argv):
    monkeypatch.setattr(sys, "argv", ["benchmarks/tucker.py"] + [str(a) for a in argv])
    return mod.main()


# ------------------------------------------------------------------ benchmarks/tucker.py
def test_tucker_benchmark_pairs_split_holds_a_triple_out_with_its_reverse():
    """A per-triple split of a KG that stores symmetric relations both ways leaks: the NYC
    KG's held-out set had 308 of 1334 triples whose reverse was a training triple."""
    import torch
    mod = _load_script("tucker")
    g = torch.Generator().manual_seed(0)
    h, t = torch.randint(0, 30, (200,), generator=g), torch.randint(0, 30, (200,), generator=g)
    r = torch.randint(0, 2, (200,), generator=g)
    triples = torch.cat([torch.stack([h, r, t], 1), torch.stack([t, r, h], 1)])  # symmetric
    train, test, _ = mod.split(triples, 0.2, 0, "random")
    assert mod.reverse_leaks(train, test) > 10
    train, test, _ = mod.split(triples, 0.2, 0, "pairs")
    assert mod.reverse_leaks(train, test) == 0 and test.size(0) > 40
    assert train.size(0) + test.size(0) == triples.size(0)
    assert {tuple(x) for x in train.tolist()}.isdisjoint({tuple(x) for x in test.tolist()})


@pytest.mark.parametrize("extra, message", [
    (["--runs", "nonsense"], "--runs 'nonsense': expected dim:num_negs:lr:epochs"),
    (["--runs", "8:1:0.01:1", "8:x:0.01:1"], "--runs '8:x:0.01:1'"),
    (["--runs", "8:1:-0.01:1"], "lr must be a positive finite number"),
    (["--test-fraction", "-0.5"], r"--test-fraction must be in \(0, 1\) \(got -0.5\)"),
    (["--test-fraction", "1"], r"--test-fraction must be in \(0, 1\)"),
    (["--eval-subset", "0"], "--eval-subset must be a positive integer"),
    (["--batch-size", "1"], "--batch-size must be >= 2"),
])
def test_tucker_benchmark_refuses_bad_arguments_before_writing(tmp_path, monkeypatch, capsys,
                                                               extra, message):
    """`--runs nonsense` used to write the results files (by default the committed
    benchmarks/results/tucker.*) with an empty table, then fail with a raw ValueError;
    `--test-fraction -0.5` silently held out half of the triples (perm[:-k])."""
    pytest.importorskip("pykeen")
    mod = _load_script("tucker")
    out = tmp_path / "res" / "tk"
    with pytest.raises(SystemExit) as exc:
        _run_script(mod, monkeypatch, ["--kg", _tiny_kg_file(tmp_path), "--out", out,
                                       "--threads", "1"] + extra)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not out.with_suffix(".json").exists() and not out.with_suffix(".md").exists()


def test_tucker_benchmark_tiny_run_writes_into_a_new_folder(tmp_path, monkeypatch):
    pytest.importorskip("pykeen")
    mod = _load_script("tucker")
    out = tmp_path / "new" / "dir" / "tk"
    assert _run_script(mod, monkeypatch, ["--kg", _tiny_kg_file(tmp_path), "--out", out,
                                          "--runs", "4:1:0.01:1", "--batch-size", "8",
                                          "--test-fraction", "0.1", "--eval-subset", "3",
                                          "--threads", "1"]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert [(r["dim"], r["epochs"]) for r in res["runs"]] == [(4, 1)]
    assert res["num_test"] >= 1 and res["num_train"] + res["num_test"] == 60
    assert "| 4 | 1 | 0.01 | 1 |" in out.with_suffix(".md").read_text()
    a_file = tmp_path / "afile"
    a_file.write_text("")
    with pytest.raises(SystemExit):                       # --out under a file
        _run_script(mod, monkeypatch, ["--kg", _tiny_kg_file(tmp_path), "--runs",
                                       "4:1:0.01:1", "--out", a_file / "tk"])


# ------------------------------------------------------- torch_stgen.experiments.diffrecon
def test_diffrecon_factor_patterns_and_out_are_checked_first(tmp_path, monkeypatch, capsys):
    """`benchmarks/diffrecon.py --factor 0` ended in a ZeroDivisionError; a bad pattern
    named the internal argument 'spec'; an --out under a file failed after training."""
    import torch_stgen.experiments.diffrecon as bench
    for bad in ("0", "-2", "x"):
        with pytest.raises(SystemExit):
            bench.build_parser().parse_args(["--factor", bad])
        assert f"argument --factor: must be a positive integer (got {bad})" in \
            capsys.readouterr().err

    def boom(args):
        raise AssertionError("data loaded before the arguments were checked")

    monkeypatch.setattr(bench, "_load", boom)
    args = bench.build_parser().parse_args(["--methods", "interp", "--no-progress"])
    args.factor = 0                                           # a Namespace changed in code
    with pytest.raises(ValueError, match=r"--factor must be a positive integer \(got 0\)"):
        bench.run(args)
    for flag in ("--patterns", "--train-patterns"):
        args = bench.build_parser().parse_args([flag, "random:0.4,nonsense"])
        with pytest.raises(ValueError, match=f"{flag}: 'nonsense' is not a pattern"):
            bench.run(args)
    parsed = bench._parse_patterns("--patterns", "block:0,2,0,2,fixed:0.4", 0)
    assert [p.name for p in parsed] == ["block:0,2,0,2", "fixed:0.4"]
    a_file = tmp_path / "afile"
    a_file.write_text("")
    for flag in ("--out", "--plot"):
        args = bench.build_parser().parse_args([flag, str(a_file / "x")])
        with pytest.raises(ValueError, match=f"{flag} .*cannot create the folder"):
            bench.run(args)
    # a missing folder is created up front
    args = bench.build_parser().parse_args(["--out", str(tmp_path / "new" / "x.json")])
    with pytest.raises(AssertionError, match="data loaded"):
        bench.run(args)
    assert (tmp_path / "new").is_dir()


# ---------------------------------------------------------- torch_stgen.experiments.kgdiff
@pytest.mark.parametrize("flag, value, message", [
    ("--stride", "-1", "argument --stride: must be a positive integer (got -1)"),
    ("--stride", "0", "argument --stride: must be a positive integer (got 0)"),
    ("--window", "-3", "argument --window: must be a positive integer (got -3)"),
    ("--val-frac", "0", "argument --val-frac: must be in (0, 1) (got 0)"),
    ("--test-frac", "1.5", "argument --test-frac: must be in (0, 1) (got 1.5)"),
])
def test_kgdiff_flags_are_refused_by_name(capsys, tmp_path, monkeypatch, flag, value,
                                          message):
    """--stride -1 / --window -3 were accepted (0 silently meant the default) and
    --val-frac 0 failed deep inside, naming 'test_frac'."""
    import torch_stgen.experiments.kgdiff as bench

    def boom(args):     # were the check to fail, this test must not run the benchmark
        raise AssertionError(f"{flag} {value} was not refused")
    monkeypatch.setattr(bench, "run", boom)
    with pytest.raises(SystemExit) as exc:
        bench.main([flag, value, "--no-progress", "--quick",
                    "--tucker-cache", str(tmp_path)])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_kgdiff_run_checks_before_loading(tmp_path, monkeypatch, capsys):
    import torch_stgen.experiments.kgdiff as bench

    def boom(args):
        raise AssertionError("data loaded before the arguments were checked")

    monkeypatch.setattr(bench, "load_data", boom)
    for name, value, message in (("stride", 0, "--stride must be a positive integer"),
                                 ("window", -3, "--window must be a positive integer"),
                                 ("val_frac", 0.0, r"--val-frac must be in \(0, 1\)"),
                                 ("test_frac", 1, r"--test-frac must be in \(0, 1\)")):
        args = bench.build_parser().parse_args(["--no-progress"])
        setattr(args, name, value)                            # a Namespace changed in code
        with pytest.raises(ValueError, match=message):
            bench.run(args)
    a_file = tmp_path / "afile"
    a_file.write_text("")
    for flags, message in ((["--out", str(a_file / "rows.json")], "--out"),
                           (["--plot", str(a_file / "p.png")], "--plot"),
                           (["--tucker-cache", str(a_file)], "--tucker-cache")):
        with pytest.raises(ValueError, match=message):
            bench.run(bench.build_parser().parse_args(flags + ["--no-progress"]))
        with pytest.raises(SystemExit):                       # the script: argparse's error
            bench.main(flags + ["--no-progress"])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--methods", "kgdif", "--no-progress"])
    assert "--methods: unknown method 'kgdif'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--methods", "nope"], "--methods: unknown method 'nope'"),
    (["--patterns", "nonsense"], "--patterns: 'nonsense' is not a pattern"),
    (["--device", "tpu"], "--device must be"),
])
def test_diffrecon_benchmark_script_reports_flag_errors(monkeypatch, capsys, argv, message):
    """benchmarks/diffrecon.py ended bad flags in a traceback from inside run()."""
    script = _diffrecon_script()

    def boom(args):     # were the check to fail, the benchmark must not run
        raise AssertionError(f"{argv} was not refused")
    monkeypatch.setattr(script, "run", boom)
    with pytest.raises(SystemExit) as exc:
        script.main(argv + ["--quick", "--no-progress"])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def _diffrecon_script():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "diffrecon.py"
    spec = importlib.util.spec_from_file_location("diffrecon_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.mark.parametrize("bench", ["diffrecon", "kgdiff"])
def test_benchmarks_report_unusable_data_as_an_error_not_a_traceback(tmp_path, capsys, bench):
    """A data file the schema cannot read ended in a traceback from inside numpy."""
    from torch_stgen.experiments import DataError
    from torch_stgen.experiments import kgdiff as kg
    bad = tmp_path / "mine.npz"
    bad.write_text("node,value\n")
    main = _diffrecon_script().main if bench == "diffrecon" else kg.main
    with pytest.raises(SystemExit) as exc:
        main(["--dataset", str(bad), "--no-progress"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert f"error: --dataset {bad}: '{bad}' is not a .npz archive" in err
    assert "Traceback" not in err
    # the library call keeps raising (a ValueError, as before)
    with pytest.raises(DataError, match="is not a .npz archive") as info:
        kg.run(kg.build_parser().parse_args(["--dataset", str(bad), "--no-progress"]))
    assert isinstance(info.value, ValueError)
