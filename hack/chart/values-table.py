#!/usr/bin/env python3
"""Renders the values table of charts/manager-operator/README.md from values.yaml.

Each documented key has a `# -- description` comment (continued by `# ` lines) right above it.

    hack/chart/values-table.py           rewrite the table between the README markers
    hack/chart/values-table.py --check   exit 1 when the README table is stale or a key is
                                         undocumented
"""
import json
import pathlib
import re
import sys

import yaml

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "manager-operator"
START, END = "<!-- values-table:start -->", "<!-- values-table:end -->"
KEY = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):(.*)$")


def documented(lines):
    """Yields (path, description) for every `# --` documented key."""
    stack = []  # (indent, key)
    desc = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            desc = stripped[4:].strip()
            continue
        if desc is not None and stripped.startswith("#"):
            desc += " " + stripped[1:].strip()
            continue
        m = KEY.match(line)
        if not m or stripped.startswith("#") or stripped.startswith("-"):
            if stripped and not stripped.startswith("#"):
                desc = None
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if desc is not None:
            yield ".".join(k for _, k in stack), desc
            desc = None


def lookup(values, path):
    cur = values
    for part in path.split("."):
        cur = cur[part]
    return cur


def leaves(values, prefix=""):
    for k, v in values.items():
        p = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from leaves(v, p + ".")
        else:
            yield p


def kind(v):
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list",
            dict: "object", type(None): "null"}[type(v)]


def table():
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    docs = dict(documented(text.splitlines()))
    missing = [p for p in leaves(values)
               if not any(p == d or p.startswith(d + ".") for d in docs)]
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for path, desc in docs.items():
        v = lookup(values, path)
        default = json.dumps(v, ensure_ascii=False, separators=(", ", ": "))
        cell = desc.replace("|", "\\|")
        rows.append(f"| `{path}` | {kind(v)} | `{default}` | {cell} |")
    return "\n".join(rows) + "\n", missing


def main(argv):
    rendered, missing = table()
    if missing:
        print("undocumented values (add a `# --` comment): " + ", ".join(missing),
              file=sys.stderr)
        return 1
    readme = CHART / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"{readme} lacks the {START} / {END} markers", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{rendered}{END}{tail}"
    if "--check" in argv:
        if new != text:
            print(f"{readme}: values table is stale (run hack/chart/values-table.py)",
                  file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    print(f"wrote the values table of {readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
