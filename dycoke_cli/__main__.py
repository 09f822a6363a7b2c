"""`python -m dycoke_cli`: the same entry point as the `dycoke` console script."""

from dycoke_cli.cli import main

if __name__ == "__main__":
    main()
