"""DiffRecon vs. baselines on incomplete coarse -> complete fine maps.

A thin wrapper around :mod:`torch_stgen.experiments.diffrecon` (all logic lives there).

Examples::

    python benchmarks/diffrecon.py --quick                       # synthetic city, minutes
    python benchmarks/diffrecon.py --dataset bikenyc --patterns fixed:0.4,random:0.4,block \
        --out benchmarks/results/diffrecon_bikenyc_a.json
    python benchmarks/diffrecon.py --merge benchmarks/results/diffrecon_bikenyc_*.json
"""
import sys

from torch_stgen.experiments import DataError, resolve_device
from torch_stgen.experiments.diffrecon import (_defaults, build_parser, check_args,
                                               merge_rows, print_table, run)


def main(argv=None) -> int:
    parser = build_parser()
    parser.add_argument("--merge", nargs="+", metavar="JSON", default=None,
                        help="only print the table of these result files (merged)")
    args = parser.parse_args(argv)
    if not args.merge:
        _defaults(args)
        try:                # flag errors as argparse errors, before anything runs
            check_args(args)
            resolve_device(args.device, args.tf32)
        except ValueError as err:
            parser.error(str(err))
    try:
        rows = merge_rows(args.merge) if args.merge else run(args)
    except DataError as err:                 # the data, not the code: no traceback
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
