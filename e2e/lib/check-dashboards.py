#!/usr/bin/env python3
"""Runs every dashboard panel query against a Prometheus that scraped a real run, and names
every panel whose query returns nothing.

    check-dashboards.py PROM_URL NAMESPACE NAME WINDOW [--allow-empty]

Grafana variables are substituted: $datasource (not in queries), $namespace=NAMESPACE,
$name=NAME, $__rate_interval/$__interval/$__range=WINDOW (e.g. "300s", long enough to cover the
scenario). Each query runs as an instant query now. Also checks that Prometheus loaded the alert
rules without errors (/api/v1/rules). Exit 1 when a query errors, returns no sample (unless
--allow-empty), or a rule is unhealthy. Stdlib only.
"""
import json
import pathlib
import sys
import urllib.parse
import urllib.request

DASHBOARDS = pathlib.Path(__file__).resolve().parents[2] / "charts" / "manager-operator" / "dashboards"


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def main(argv):
    prom, ns, name, window = argv[:4]
    allow_empty = "--allow-empty" in argv
    subst = {"$__rate_interval": window, "$__interval": window, "$__range": window,
             "$namespace": ns, "$name": name}
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
                n = len(result) if data.get("resultType") in ("vector", "matrix") else 1
                label = f"{path.stem} / {panel['title']} [{t['refId']}]"
                sample = ""
                if result and data.get("resultType") == "vector":
                    sample = result[0]["value"][1]
                rows.append((label, n, sample))
                if n == 0:
                    empty.append(label + "\n      " + expr)
    width = max(len(r[0]) for r in rows) if rows else 10
    for label, n, sample in rows:
        status = "ok   " if n else "EMPTY"
        print(f"  {status} {label:<{width}}  series={n:<3} first={sample}")
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
    if empty:
        print(f"\n{len(empty)} panel queries returned nothing:")
        for e in empty:
            print(f"    - {e}")
    print(f"\n{len(rows) - len(empty)}/{len(rows)} panel queries returned data")
    if errors or bad_rules or n_rules == 0 or (empty and not allow_empty):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
