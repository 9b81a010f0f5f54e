"""The condor_* programs (one module each; condor_rm/hold/release share act.py)."""
