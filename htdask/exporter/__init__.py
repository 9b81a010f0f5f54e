"""The Prometheus exporter and status page of htdask: reads Redis through `state`, never a schedd.

`python cli.py exporter` serves `/metrics`, `/` and `/healthz` (htdask/exporter/server.py).
"""
