"""torch_stgen.experiments: the benchmark logic behind ``benchmarks/*.py`` and the
``torch-stgen`` command line (importable, testable, no top-level side effects)."""
