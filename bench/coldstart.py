"""Cold start: what a fresh Python process spends before it can serve, measured in subprocesses."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass

from bench.stack import REPO_ROOT
from bench.stats import median

# Each snippet prints JSON with its own timings (perf_counter, ms).
_IMPORT_APP = """
import json, time
t0 = time.perf_counter()
import app
t1 = time.perf_counter()
print(json.dumps({"import_app": (t1 - t0) * 1000}))
"""

_ORCHESTRATOR_PATH = """
import json, time
t0 = time.perf_counter()
import app
t1 = time.perf_counter()
components = app.get_components()
t2 = time.perf_counter()
components.store.get("cold-start-probe")
t3 = time.perf_counter()
print(json.dumps({"import_app": (t1 - t0) * 1000, "components": (t2 - t1) * 1000,
                  "first_read": (t3 - t2) * 1000, "total": (t3 - t0) * 1000}))
"""

_IMPORTTIME_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


@dataclass
class ColdStart:
    runs: int
    import_app_ms: float
    components_ms: float
    first_read_ms: float
    orchestrator_total_ms: float
    top_imports: list[tuple[str, float]]


def _environment(ddb_url: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_PROFILE")}
    env.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1", "DDB_ENDPOINT": ddb_url,
        # As deployed: the API builds a Lambda client for dispatch; no local threads.
        "DISPATCH_MODE": "lambda", "CURSOR_SECRET": "a bench deployment's cursor key",
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    })
    return env


def _run(code: str, env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *flags, "-c", code], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=True)


def measure(ddb_url: str, runs: int = 7) -> ColdStart:
    """Time `import app`, building the components and the first DynamoDB read, in fresh processes."""
    env = _environment(ddb_url)
    imports = [json.loads(_run(_IMPORT_APP, env).stdout)["import_app"] for _ in range(runs)]
    paths = [json.loads(_run(_ORCHESTRATOR_PATH, env).stdout) for _ in range(runs)]
    return ColdStart(
        runs=runs,
        import_app_ms=median(imports),
        components_ms=median([p["components"] for p in paths]),
        first_read_ms=median([p["first_read"] for p in paths]),
        orchestrator_total_ms=median([p["total"] for p in paths]),
        top_imports=_top_imports(env),
    )


def _top_imports(env: dict[str, str], count: int = 8) -> list[tuple[str, float]]:
    """Return the costliest imports of app.py and of the modules it imports (cumulative ms)."""
    stderr = _run("import app", env, "-X", "importtime").stderr
    top: dict[str, float] = {}
    for line in stderr.splitlines():
        match = _IMPORTTIME_LINE.match(line)
        # importtime indents two spaces per level: app's imports have three, theirs five.
        if match and len(match.group(3)) in (3, 5):
            top[match.group(4)] = int(match.group(2)) / 1000
    return sorted(top.items(), key=lambda item: -item[1])[:count]
