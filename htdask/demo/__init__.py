"""`htdask demo` and what it runs: a private redis-server, the local pool, Celery worker, beat, Flower
and a Dask Gateway (`services.Stack`, `gateway_server.GatewayServer`); tests and benchmarks use the
same stack. Shipped (the demo is a command of the product); it sits on top of every other layer and
only the `htdask demo` command imports it. `harness/` keeps only test and build tooling.

Every process started here is tracked by its pid and stopped by it: nothing leaks.
"""
