"""What the benchmark ran on: CPUs, memory, Python, load, date."""
from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def describe() -> dict[str, str]:
    """Return the machine's description as label -> value."""
    load = os.getloadavg()
    return {
        "date (UTC)": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "CPUs": str(os.cpu_count()),
        "CPU model": _cpu_model(),
        "memory": f"{_memory_gib():.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": sys.version.split()[0],
        "load average at start (1/5/15 min)": " / ".join(f"{v:.2f}" for v in load),
    }


def load_average() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())
