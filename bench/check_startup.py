"""How long `autokd-dsl check` takes from a cold process, and whether it imports torch (it must not).

Runs ``autokd-dsl check library/*.kd examples/*.kd`` as a subprocess once to warm the file cache, then
``--runs`` times, and prints the median, min and max wall time; then runs it once more under
``-X importtime`` (``PYTHONPROFILEIMPORTTIME=1``) to list the slowest imports and to say whether torch was
imported.

    python bench/check_startup.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "timm", "numpy", "sklearn", "matplotlib", "networkx", "pydantic")


def command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m autokd_dsl`."""
    files = [str(p.relative_to(ROOT)) for p in sorted(ROOT.glob("library/*.kd")) + sorted(ROOT.glob("examples/*.kd"))]
    script = Path(sys.executable).parent / "autokd-dsl"
    if script.exists():
        return [str(script), "check", *files]
    found = shutil.which("autokd-dsl")
    return ([found] if found else [sys.executable, "-m", "autokd_dsl"]) + ["check", *files]


def run(cmd: list[str], env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"`{' '.join(cmd)}` failed ({result.returncode}):\n{result.stderr}")
    return took, result


def imports(stderr: str) -> list[tuple[int, str]]:
    """(cumulative µs, module) for each line that `-X importtime` writes."""
    out = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
            if cumulative.isdigit():
                out.append((int(cumulative), name))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)

    cmd = command()
    print("command: " + " ".join(cmd))
    run(cmd)  # warm-up: file cache, .pyc files
    times = [run(cmd)[0] for _ in range(args.runs)]
    print(f"wall time over {args.runs} runs: median {statistics.median(times) * 1000:.0f} ms, "
          f"min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")
    print("  (" + ", ".join(f"{t * 1000:.0f}" for t in times) + " ms)")

    _, result = run(cmd, env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    modules = imports(result.stderr)
    if not modules:
        print("import time: no -X importtime output (cannot tell what was imported)")
        return 1
    top = sorted((m for m in modules if "." not in m[1]), reverse=True)[:8]
    print("slowest top-level imports (cumulative): " + ", ".join(f"{n} {us / 1000:.0f} ms" for us, n in top))
    heavy = sorted({name.split(".")[0] for _, name in modules if name.split(".")[0] in HEAVY})
    print(f"torch imported: {'yes' if 'torch' in heavy else 'no'}; other heavy packages imported: "
          f"{', '.join(h for h in heavy if h != 'torch') or 'none'}")
    return 1 if "torch" in heavy else 0


if __name__ == "__main__":
    sys.exit(main())
