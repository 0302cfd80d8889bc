"""Command modules: each exposes add_parser(subparsers) and run(args) -> int."""
