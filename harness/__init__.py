"""Test and build tooling, never shipped: `venv_dir.py` (where make keeps the virtualenv) and
`sentinel.py` (a Redis Sentinel set for the tests and benchmarks, on top of `htdask.demo.services`)."""
