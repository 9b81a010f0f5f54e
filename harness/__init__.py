"""Start and stop the local processes that tests, the demo and benchmarks need.

Every process started here is tracked by its pid and stopped by it: nothing leaks.
"""
