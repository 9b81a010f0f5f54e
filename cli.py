#!/usr/bin/env python3
"""Command line of the HTCondor-backed Dask cluster controller: `python cli.py ...` runs the `htdask`
command (`htdask.main`; `pip install .` installs it as `htdask`). `python cli.py --help` lists the
commands; every command's --help has examples.
"""
from htdask.main import main

if __name__ == "__main__":
    main(prog_name="htdask")
