#!/usr/bin/env python3
"""Runs every dashboard panel query against a Prometheus that scraped a real run, and names
every panel whose query returns nothing.

    check-dashboards.py PROM_URL NAMESPACE NAME WINDOW [--allow-empty] [--expect "BOARD/TITLE>=N"]...

Grafana variables are substituted: $datasource (not in queries), $namespace=NAMESPACE,
$name=NAME, $cluster=.* (All), $job=manager-operator (the e2e scrape job), $__rate_interval/$__interval/$__range=WINDOW (e.g. "300s", long enough to cover the
scenario). Each query runs as an instant query now; a result whose samples are all NaN (e.g. a
quantile over a window with no observations) counts as empty. `--expect "overview/Denied in the
time range>=1"` (or `>0`) also requires the largest sample of that panel's queries to reach a
value, so what the scenario did must show up, not only some series. Also checks that Prometheus
loaded the alert rules without errors (/api/v1/rules). Exit 1 when a query errors, returns no
sample (unless --allow-empty), misses an expectation, or a rule is unhealthy. Stdlib only.
"""
import json
import math
import pathlib
import re
import sys
import urllib.parse
import urllib.request

DASHBOARDS = pathlib.Path(__file__).resolve().parents[2] / "charts" / "manager-operator" / "dashboards"


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def main(argv):
    prom, ns, name, window = argv[:4]
    # The scrape job of the operator's targets ($job); $cluster is "All" (.*): the e2e
    # Prometheus sees one cluster and puts no cluster label on its series.
    job = "manager-operator"
    allow_empty = "--allow-empty" in argv
    expect = {}  # "board/title" -> (op, value)
    for i, a in enumerate(argv):
        if a == "--expect":
            m = re.fullmatch(r"(.+?)\s*(>=|>)\s*([0-9.]+)", argv[i + 1])
            if not m:
                raise SystemExit(f"bad --expect {argv[i + 1]!r}: want BOARD/TITLE>=N or >N")
            expect[m.group(1)] = (m.group(2), float(m.group(3)))
    best = {}  # "board/title" -> largest finite sample over its queries
    subst = {"$__rate_interval": window, "$__interval": window, "$__range": window,
             "$namespace": ns, "$name": name, "$cluster": ".*", "$job": job}
    rows, empty, errors = [], [], []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for t in panel.get("targets", []):
                expr = t["expr"]
                for k, v in subst.items():
                    expr = expr.replace(k, v)
                q = urllib.parse.urlencode({"query": expr})
                try:
                    res = get(f"{prom}/api/v1/query?{q}")
                except Exception as e:  # HTTP 400 for bad PromQL
                    errors.append((path.name, panel["title"], t["refId"], str(e)))
                    continue
                data = res.get("data", {})
                result = data.get("result", [])
                if data.get("resultType") == "vector":
                    values = [float(r["value"][1]) for r in result]
                elif data.get("resultType") == "scalar":
                    values = [float(result[1])]
                else:
                    values = []
                finite = [v for v in values if not math.isnan(v)]
                n = len(finite)
                label = f"{path.stem} / {panel['title']} [{t['refId']}]"
                sample = f"{max(finite):.4g}" if finite else ("NaN" if values else "")
                rows.append((label, n, sample))
                key = f"{path.stem}/{panel['title']}"
                if finite:
                    best[key] = max(best.get(key, -math.inf), max(finite))
                if n == 0:
                    what = "only NaN" if values else "no series"
                    empty.append(f"{label} ({what})\n      {expr}")
    width = max(len(r[0]) for r in rows) if rows else 10
    for label, n, sample in rows:
        status = "ok   " if n else "EMPTY"
        print(f"  {status} {label:<{width}}  series={n:<3} max={sample}")
    rules = get(f"{prom}/api/v1/rules")["data"]["groups"]
    bad_rules = [(g["name"], r.get("name"), r.get("lastError"))
                 for g in rules for r in g["rules"] if r.get("health") not in ("ok", "unknown")]
    n_rules = sum(len(g["rules"]) for g in rules)
    print(f"  alert/recording rules loaded by Prometheus: {n_rules}, unhealthy: {len(bad_rules)}")
    for g, r, e in bad_rules:
        print(f"  UNHEALTHY rule {g}/{r}: {e}")
    firing = get(f"{prom}/api/v1/alerts")["data"]["alerts"]
    for a in firing:
        lbl = a["labels"]
        print(f"  alert {a['state']:<8} {lbl.get('alertname')} "
              f"{lbl.get('namespace', '')}/{lbl.get('name', '')} {lbl.get('reason', '')}")
    for e in errors:
        print(f"  ERROR {e[0]} / {e[1]} [{e[2]}]: {e[3]}")
    unmet = []
    for key, (op, want) in expect.items():
        got = best.get(key)
        ok = got is not None and (got >= want if op == ">=" else got > want)
        print(f"  expect {'ok   ' if ok else 'UNMET'} {key} {op} {want:g}: got {got}")
        if not ok:
            unmet.append(key)
    if any(key not in best and not any(r[0].startswith(key.replace("/", " / ", 1) + " [") for r in rows)
           for key in expect):
        print("  (an --expect names no panel: check BOARD/TITLE)")
    if empty:
        print(f"\n{len(empty)} panel queries returned nothing:")
        for e in empty:
            print(f"    - {e}")
    print(f"\n{len(rows) - len(empty)}/{len(rows)} panel queries returned data")
    if unmet:
        print(f"{len(unmet)} expectations unmet: {', '.join(unmet)}")
    if errors or bad_rules or n_rules == 0 or unmet or (empty and not allow_empty):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
