"""The bounded soak on Redis Sentinel, its master SIGKILLed half-way: `python bench/soak.py --sentinel`."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.soak import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--sentinel", "--seconds", "60", *sys.argv[1:]]))
