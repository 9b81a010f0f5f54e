"""htdask: Dask clusters whose workers are HTCondor jobs, every scale decision a Celery task.

The `htdask` command (`pip install .`; `python cli.py` in a checkout) is `htdask.main:main`.
"""
__version__ = "0.1.0"
