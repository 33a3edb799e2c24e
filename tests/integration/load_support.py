"""CPU load for tests of start-up and restart races (which show under load, as on a busy
CI machine, and rarely on an idle one)."""

from __future__ import annotations

import os
import subprocess
import sys


def cpu_burners(seconds: float) -> list[subprocess.Popen[bytes]]:
    """One busy process per core, each ending by itself after `seconds` (kill them
    sooner when done)."""
    loop = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(os.cpu_count() or 2)]
