#!/usr/bin/env python3
"""Every manager_operator_* name used by the dashboards and the alert rules is a metric that
src/metrics/registry.rs registers (histograms: with _bucket/_sum/_count). Stdlib only.

    hack/chart/check-metric-names.py     exit 1 naming each unknown metric and where it is used
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "manager-operator"


def registered():
    text = (ROOT / "src" / "metrics" / "registry.rs").read_text()
    names = set(re.findall(r'\bh?opts\(\s*"([a-z_]+)"', text))
    if not names:
        sys.exit("no metric names found in src/metrics/registry.rs (did its style change?)")
    hist = set(re.findall(r'\bhopts\(\s*"([a-z_]+)"', text))
    full = {f"manager_operator_{n}" for n in names}
    for h in hist:
        full |= {f"manager_operator_{h}_{s}" for s in ("bucket", "sum", "count")}
    return full


def main():
    known = registered()
    bad = []
    sources = [CHART / "files" / "alerts.yaml", *sorted((CHART / "dashboards").glob("*.json"))]
    for path in sources:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            for name in re.findall(r"(?<![:\w])manager_operator_[a-z_]+", line):
                if name not in known:
                    bad.append(f"{path.relative_to(ROOT)}:{n}: unknown metric {name}")
    if bad:
        print("\n".join(bad), file=sys.stderr)
        return 1
    print(f"[metric-names] ok: dashboards and alerts use only the {len(known)} registered names",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
