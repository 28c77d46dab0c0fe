#!/usr/bin/env python3
"""Generates the Grafana dashboards of the chart (charts/manager-operator/dashboards/*.json).

    hack/chart/gen-dashboards.py            write the JSON files
    hack/chart/gen-dashboards.py --check    exit 1 when the committed files differ from the generated ones
    hack/chart/gen-dashboards.py --queries  print every panel query as JSON lines
                                     {"dashboard", "panel", "refId", "expr", "instant"}

The dashboards are plain Grafana JSON models (schemaVersion 39): the Prometheus data source is
the `${datasource}` variable, `cluster` and `job` pick the operator's targets when one Prometheus
(or Thanos) sees several clusters or releases (every selector gets `cluster=~"$cluster",
job=~"$job"`; "All" matches series without the label too), the Overview filters the
per-ManagerConfig series by `namespace`, and "Manager detail" adds `namespace` and `name`. Queries
use the manager_operator_* metrics of src/metrics/registry.rs and the standard process_* metrics, plus the
`pod` label that Prometheus Operator's ServiceMonitor (and the e2e scrape config) put on every
target.
"""
import json
import pathlib
import re
import sys

OUT = pathlib.Path(__file__).resolve().parents[2] / "charts" / "manager-operator" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
M = "manager_operator_"


# Series labelled with a ManagerConfig's namespace and name (the Overview's namespace filter
# applies to these only: elsewhere `namespace` is the target's, the operator pod's).
PER_CONFIG = {f"{M}{n}" for n in (
    "manager_ready", "startup_failures_total", "leader", "leader_transitions_total",
    "lease_renew_failures_total", "reconcile_total", "reconcile_duration_seconds_bucket",
    "reconcile_duration_seconds_count", "reconcile_duration_seconds_sum", "workers_active",
    "queue_depth", "lease_duration_seconds")}
SELECTOR = re.compile(r"\b((?:manager_operator|process)_[a-z_]+)(\{([^}]*)\})?")


def scoped(expr, namespace_filter):
    """`expr` with the cluster/job (and, for per-config series, namespace) matchers added."""
    def add(m):
        name, inner = m.group(1), m.group(3)
        matchers = ['cluster=~"$cluster"', 'job=~"$job"']
        if namespace_filter and name in PER_CONFIG:
            matchers.append('namespace=~"$namespace"')
        if inner:
            matchers.append(inner)
        return name + "{" + ", ".join(matchers) + "}"
    return SELECTOR.sub(add, expr)


class Board:
    def __init__(self, uid, title, description, tags, namespace_filter=False):
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.namespace_filter = namespace_filter
        self.panels = []
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_h = 0

    def _place(self, w, h):
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_h
            self.row_h = 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def row(self, title):
        if self.x:
            self.x = 0
            self.y += self.row_h
            self.row_h = 0
        self.panels.append({
            "id": self._id(), "type": "row", "title": title, "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": [],
        })
        self.y += 1

    def _id(self):
        i = self.next_id
        self.next_id += 1
        return i

    def panel(self, kind, title, targets, *, w=12, h=8, unit="short", description="",
              options=None, custom=None, mappings=None, decimals=None, thresholds=None,
              instant=False, min0=True, links=None):
        defaults = {"unit": unit}
        if links:
            defaults["links"] = links
        if min0 and kind in ("timeseries", "bargauge"):
            defaults["min"] = 0
        if decimals is not None:
            defaults["decimals"] = decimals
        if mappings:
            defaults["mappings"] = mappings
        defaults["thresholds"] = thresholds or {
            "mode": "absolute", "steps": [{"color": "green", "value": None}]}
        if custom is not None:
            defaults["custom"] = custom
        elif kind == "timeseries":
            defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                                  "showPoints": "never", "spanNulls": False}
        tgts = []
        for i, t in enumerate(targets):
            expr, legend = (t, "") if isinstance(t, str) else t
            expr = scoped(expr, self.namespace_filter)
            tgt = {"datasource": DS, "refId": chr(ord("A") + i), "expr": expr,
                   "legendFormat": legend or "__auto", "range": not instant,
                   "instant": instant}
            if kind == "table":
                tgt["format"] = "table"
            tgts.append(tgt)
        p = {"id": self._id(), "type": kind, "title": title, "description": description,
             "datasource": DS, "gridPos": self._place(w, h), "targets": tgts,
             "fieldConfig": {"defaults": defaults, "overrides": []},
             "options": options or default_options(kind)}
        self.panels.append(p)
        return p

    def render(self, variables):
        return {
            "__inputs": [],
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts", "type": "dashboard"}]},
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": [{"title": "manager-operator dashboards", "type": "dashboards",
                       "tags": ["manager-operator"], "asDropdown": True,
                       "includeVars": True, "keepTime": True}],
            "panels": self.panels,
            "refresh": "30s",
            "schemaVersion": 39,
            "tags": self.tags,
            "templating": {"list": variables},
            "time": {"from": "now-3h", "to": "now"},
            "timepicker": {},
            "timezone": "",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "",
        }


def default_options(kind):
    legend = {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []}
    if kind == "timeseries":
        return {"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}}
    if kind == "stat":
        return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value", "graphMode": "none", "justifyMode": "auto",
                "orientation": "auto", "textMode": "auto", "wideLayout": True}
    if kind == "bargauge":
        return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "displayMode": "basic", "orientation": "horizontal", "showUnfilled": True,
                "valueMode": "color", "namePlacement": "auto", "sizing": "auto"}
    if kind == "state-timeline":
        return {"legend": legend, "tooltip": {"mode": "single", "sort": "none"},
                "mergeValues": True, "showValue": "auto", "alignValue": "left",
                "rowHeight": 0.9}
    if kind == "table":
        return {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    return {}


def datasource_var():
    return {"name": "datasource", "label": "Data source", "type": "datasource",
            "query": "prometheus", "regex": "", "hide": 0, "refresh": 1,
            "current": {}, "options": [], "includeAll": False, "multi": False}


def query_var(name, label, query, sort=1, include_all=False):
    v = {"name": name, "label": label, "type": "query", "datasource": DS,
         "query": {"query": query, "refId": f"{name}-var", "qryType": 1},
         "definition": query, "refresh": 2, "regex": "", "sort": sort, "hide": 0,
         "current": {}, "options": [], "includeAll": include_all, "multi": include_all}
    if include_all:
        # "All" is a regex matching every value, and series without the label.
        v["allValue"] = ".*"
        v["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return v


def scope_vars():
    """`cluster` and `job`: which operator targets (All by default)."""
    return [
        query_var("cluster", "Cluster", f"label_values({M}build_info, cluster)", include_all=True),
        query_var("job", "Job", f'label_values({M}build_info{{cluster=~"$cluster"}}, job)',
                  include_all=True),
    ]


# The Manager detail dashboard of a table row's ManagerConfig.
DETAIL_LINK = [{"title": "Manager detail of ${__data.fields.namespace}/${__data.fields.name}",
                "url": "/d/manager-operator-detail/manager-operator-manager-detail"
                       "?${datasource:queryparam}&${cluster:queryparam}&${job:queryparam}"
                       "&var-namespace=${__data.fields.namespace}"
                       "&var-name=${__data.fields.name}&${__url_time_range}"}]


RED_GREEN = {"mode": "absolute", "steps": [{"color": "red", "value": None},
                                           {"color": "green", "value": 1}]}
GREEN_RED = {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                           {"color": "red", "value": 1}]}
READY_MAP = [{"type": "value", "options": {
    "0": {"text": "Not ready", "color": "red", "index": 0},
    "1": {"text": "Ready", "color": "green", "index": 1}}}]
LEADER_MAP = [{"type": "value", "options": {
    "0": {"text": "standby", "color": "transparent", "index": 0},
    "1": {"text": "leader", "color": "blue", "index": 1}}}]
BARS = {"drawStyle": "bars", "lineWidth": 1, "fillOpacity": 80, "showPoints": "never",
        "stacking": {"mode": "normal", "group": "A"}}


def overview():
    b = Board("manager-operator-overview", "manager-operator / Overview",
              "Every ManagerConfig at a glance: ready vs failing, why starts fail, who leads, "
              "how placement spreads them over the replicas, the admission webhook and the "
              "operator processes.", ["manager-operator"], namespace_filter=True)
    ready = f"max by (namespace, name) ({M}manager_ready)"
    b.row("Managers")
    b.panel("stat", "Managers ready", [f"count({ready} == 1) or vector(0)"], w=6, h=4,
            thresholds={"mode": "absolute", "steps": [{"color": "green", "value": None}]},
            description="ManagerConfigs whose workers run on their leader.")
    b.panel("stat", "Managers failing", [f"count({ready} == 0) or vector(0)"], w=6, h=4,
            thresholds=GREEN_RED,
            description="ManagerConfigs that failed to start or wait (Ready=False on the leader).")
    b.panel("stat", "Managers without a leader",
            [f"count(max by (namespace, name) ({M}leader) == 0) or vector(0)"], w=6, h=4,
            thresholds=GREEN_RED,
            description="ManagerConfigs no replica leads right now.")
    b.panel("stat", "Operator replicas scraped", [f"count({M}tasks)"], w=6, h=4,
            thresholds=RED_GREEN)
    b.panel("timeseries", "Managers ready vs failing",
            [(f"count({ready} == 1) or vector(0)", "ready"),
             (f"count({ready} == 0) or vector(0)", "failing")],
            description="Count of ManagerConfigs by their Ready gauge, max over replicas.")
    b.panel("timeseries", "Managers by state, per replica",
            [(f"sum by (pod, state) ({M}managers)", "{{pod}} {{state}}")],
            description="candidate, leading, starting, running, stopping, failed.")
    b.panel("timeseries", "Startup failures by reason",
            [(f"sum by (reason) (increase({M}startup_failures_total[$__rate_interval]))",
              "{{reason}}")], custom=BARS,
            description="Failed starts per interval by stable reason (docs/design.md §2.3).")
    b.panel("table", "Startup failures by config and reason (since replica start)",
            [f"sum by (namespace, name, reason) ({M}startup_failures_total)"], instant=True,
            options={"showHeader": True, "cellHeight": "sm", "footer": {"show": False},
                     "sortBy": [{"displayName": "Value", "desc": True}]},
            links=DETAIL_LINK,
            description="Counters of every replica, summed. Ready configs can appear here "
                        "when they failed before and recovered. A row links to its Manager "
                        "detail dashboard.")
    b.panel("table", "ManagerConfigs not ready",
            [f"max by (namespace, name) ({M}manager_ready) == 0"], instant=True, w=24, h=6,
            links=DETAIL_LINK,
            description="Every ManagerConfig whose Ready gauge is 0 on every replica; a row "
                        "links to its Manager detail dashboard.")
    b.row("Leadership")
    b.panel("bargauge", "Managers led per replica",
            [(f"sum by (pod) ({M}leader)", "{{pod}}")], w=8,
            description="How many ManagerConfig Leases each replica holds.")
    b.panel("timeseries", "Leader transitions",
            [(f"sum by (namespace, name) (increase({M}leader_transitions_total[$__rate_interval]))",
              "{{namespace}}/{{name}}")], w=8, custom=BARS,
            description="Leadership gained or lost (a failover counts on both replicas).")
    b.panel("timeseries", "Lease renew latency p99, per replica",
            [(f"histogram_quantile(0.99, sum by (pod, le) "
              f"(rate({M}lease_renew_duration_seconds_bucket[$__rate_interval])))", "{{pod}}")],
            w=8, unit="s")
    b.panel("timeseries", "Lease renew failures",
            [(f"sum by (namespace, name) (increase({M}lease_renew_failures_total[$__rate_interval]))",
              "{{namespace}}/{{name}}")], w=12, custom=BARS)
    b.panel("timeseries", "Live manager tasks, per replica",
            [(f"sum by (pod) ({M}tasks)", "{{pod}}")], w=12,
            description="Tasks owned by managers; returns to baseline when configs go away.")
    b.row("Placement")
    b.panel("stat", "Replica views disagree (max − min replicas seen)",
            [f"max(max by (namespace, job) ({M}replicas_seen) "
             f"- min by (namespace, job) ({M}replicas_seen))"], w=12, h=4,
            thresholds=GREEN_RED, decimals=0,
            description="0 when the replicas of each group (namespace, job) see the same number "
                        "of live ready members. "
                        "Replicas that disagree place ManagerConfigs differently "
                        "(alert ManagerOperatorReplicasDisagree).")
    b.panel("stat", "Configs that hit LeaseInUse (since replica start)",
            [f"count(max by (namespace, name) "
             f"({M}startup_failures_total{{reason=\"LeaseInUse\"}}) > 0) or vector(0)"],
            w=12, h=4, thresholds=GREEN_RED, decimals=0,
            description="ManagerConfigs refused because another ManagerConfig names the same "
                        "Lease (see the Startup failures table).")
    b.panel("timeseries", "Replicas seen, per replica",
            [(f"max by (pod) ({M}replicas_seen)", "{{pod}}")], w=8, decimals=0,
            description="Live ready members of the group each replica sees, itself included.")
    b.panel("timeseries", "Managers preferred vs leading, per replica",
            [(f"sum by (pod) ({M}managers_preferred)", "{{pod}} preferred"),
             (f"sum by (pod) ({M}managers_leading)", "{{pod}} leading")], w=8,
            description="Preferred: configs placement gives the replica (at most "
                        "ceil(N/R × 1.05)). Leading: managers it leads now. They converge "
                        "after a join or leave, at the handover pace.")
    b.panel("timeseries", "Handovers by reason",
            [(f"sum by (reason) (rate({M}handovers_total[$__rate_interval]))", "{{reason}}")],
            w=8, unit="ops",
            description="Leases given up on purpose: rebalance (placement moved the config to "
                        "another replica), shutdown (SIGTERM).")
    b.row("Admission webhook")
    b.panel("timeseries", "Admission requests by operation and result",
            [(f"sum by (operation, allowed) (rate({M}admission_requests_total[$__rate_interval]))",
              "{{operation}} allowed={{allowed}}")], w=8, unit="reqps")
    b.panel("timeseries", "Admission latency",
            [(f"histogram_quantile(0.5, sum by (le) (rate({M}admission_duration_seconds_bucket[$__rate_interval])))", "p50"),
             (f"histogram_quantile(0.9, sum by (le) (rate({M}admission_duration_seconds_bucket[$__rate_interval])))", "p90"),
             (f"histogram_quantile(0.99, sum by (le) (rate({M}admission_duration_seconds_bucket[$__rate_interval])))", "p99")],
            w=8, unit="s")
    b.panel("timeseries", "Admission denials",
            [(f"sum by (operation) (rate({M}admission_requests_total{{allowed=\"false\"}}[$__rate_interval]))",
              "{{operation}}")], w=8, unit="reqps",
            description="Denied ManagerConfigs (operation INVALID: requests the webhook could "
                        "not decode).")
    b.panel("stat", "Denied in the time range",
            [f"sum(increase({M}admission_requests_total{{allowed=\"false\"}}[$__range])) or vector(0)"],
            w=12, h=4, decimals=0)
    b.panel("stat", "Webhook certificate rotations (since replica start)",
            [f"sum({M}webhook_certificate_rotations_total)"], w=12, h=4, decimals=0)
    b.row("Workers")
    b.panel("timeseries", "Reconciles by result",
            [(f"sum by (result) (rate({M}reconcile_total[$__rate_interval]))", "{{result}}")],
            w=6, unit="ops")
    b.panel("timeseries", "Hook latency p99 by status code",
            [(f"histogram_quantile(0.99, sum by (code, le) "
              f"(rate({M}hook_request_duration_seconds_bucket[$__rate_interval])))", "{{code}}")],
            w=6, unit="s")
    b.panel("timeseries", "Queue depth and reconciles in flight",
            [(f"sum({M}queue_depth)", "queued"), (f"sum({M}workers_active)", "in flight")],
            w=6)
    b.panel("timeseries", "Watch-cache bytes by replica",
            [(f"max by (pod) ({M}watch_cache_bytes)", "{{pod}}")], w=6, unit="bytes",
            description="JSON bytes of the objects in the workers' watch caches, against "
                        "--max-watch-cache-bytes (tenantLimits.maxWatchCacheBytes).")
    b.row("Operator processes")
    b.panel("timeseries", "CPU per replica",
            [(f"sum by (pod) (rate(process_cpu_seconds_total[$__rate_interval]))", "{{pod}}")],
            w=8, unit="percentunit",
            description="CPU time per second of each operator process (1 = one core).")
    b.panel("timeseries", "Resident memory per replica",
            [(f"max by (pod) (process_resident_memory_bytes)", "{{pod}}")], w=8, unit="bytes",
            description="RSS of each operator process; compare with resources.limits.memory "
                        "(docs/security.md sizes it against the watch-cache budgets).")
    b.panel("timeseries", "Open file descriptors per replica",
            [(f"max by (pod) (process_open_fds)", "{{pod}} open"),
             (f"max by (pod) (process_max_fds)", "{{pod}} limit")], w=8,
            description="Sockets (API server, hooks) and files; the limit is the process's.")
    b.panel("timeseries", "Kubernetes API requests by method and code",
            [(f"sum by (method, code) (rate({M}kube_requests_total[$__rate_interval]))",
              "{{method}} {{code}}")], w=12, unit="reqps",
            description="Every request of every client of the operator (its own, Leases, "
                        "the workers' impersonating clients); code \"error\": no answer.")
    b.panel("timeseries", "Kubernetes API latency p99 by method",
            [(f"histogram_quantile(0.99, sum by (method, le) "
              f"(rate({M}kube_request_duration_seconds_bucket[$__rate_interval])))", "{{method}}")],
            w=12, unit="s", description="Time to the answer's headers (for WATCH: until "
                                        "the watch is established).")
    return b.render([datasource_var(), *scope_vars(),
                     query_var("namespace", "Namespace",
                               f'label_values({M}leader{{cluster=~"$cluster", job=~"$job"}}, namespace)',
                               include_all=True)])


def detail():
    b = Board("manager-operator-detail", "manager-operator / Manager detail",
              "One ManagerConfig: readiness and leadership over time, Lease renewals, startup, "
              "and its workers' reconciles and hook calls.", ["manager-operator"])
    sel = 'namespace="$namespace", name="$name"'
    b.row("State")
    b.panel("stat", "Ready", [f"max({M}manager_ready{{{sel}}})"], w=6, h=4,
            mappings=READY_MAP, thresholds=RED_GREEN)
    b.panel("stat", "Leader", [(f"max by (pod) ({M}leader{{{sel}}}) == 1", "{{pod}}")], w=6, h=4,
            options={**default_options("stat"), "textMode": "name"},
            description="The replica holding the Lease (empty: no leader).")
    b.panel("stat", "Startup failures in the time range",
            [f"sum(increase({M}startup_failures_total{{{sel}}}[$__range])) or vector(0)"],
            w=6, h=4, thresholds=GREEN_RED, decimals=0)
    b.panel("stat", "Leader transitions in the time range",
            [f"sum(increase({M}leader_transitions_total{{{sel}}}[$__range])) or vector(0)"],
            w=6, h=4, decimals=0)
    b.panel("state-timeline", "Ready timeline", [(f"max({M}manager_ready{{{sel}}})", "ready")],
            w=12, h=5, mappings=READY_MAP, custom={"fillOpacity": 80, "lineWidth": 0})
    b.panel("state-timeline", "Leader timeline, per replica",
            [(f"max by (pod) ({M}leader{{{sel}}})", "{{pod}}")], w=12, h=5,
            mappings=LEADER_MAP, custom={"fillOpacity": 80, "lineWidth": 0})
    b.row("Lease")
    b.panel("timeseries", "Lease renew latency, per replica (all its managers)",
            [(f"histogram_quantile(0.5, sum by (pod, le) (rate({M}lease_renew_duration_seconds_bucket[$__rate_interval])))", "{{pod}} p50"),
             (f"histogram_quantile(0.99, sum by (pod, le) (rate({M}lease_renew_duration_seconds_bucket[$__rate_interval])))", "{{pod}} p99")],
            w=8, unit="s",
            description="The renew histogram has no per-config label: this is the replica's view.")
    b.panel("timeseries", "Lease renew failures",
            [(f"sum by (pod) (increase({M}lease_renew_failures_total{{{sel}}}[$__rate_interval]))",
              "{{pod}}")], w=8, custom=BARS)
    b.panel("timeseries", "Leader transitions",
            [(f"sum by (pod) (increase({M}leader_transitions_total{{{sel}}}[$__rate_interval]))",
              "{{pod}}")], w=8, custom=BARS)
    b.row("Startup")
    b.panel("timeseries", "Startup failures by reason",
            [(f"sum by (reason) (increase({M}startup_failures_total{{{sel}}}[$__rate_interval]))",
              "{{reason}}")], custom=BARS)
    b.panel("timeseries", "Startup duration (all managers of each replica)",
            [(f"histogram_quantile(0.99, sum by (pod, le) (rate({M}startup_duration_seconds_bucket[$__rate_interval])))", "{{pod}} p99"),
             (f"sum by (pod) ({M}startup_duration_seconds_sum) / sum by (pod) ({M}startup_duration_seconds_count)", "{{pod}} mean since start")],
            unit="s",
            description="Leadership acquired to all workers running. No per-config label.")
    b.row("Workers")
    b.panel("timeseries", "Reconcile rate by worker and result",
            [(f"sum by (worker, result) (rate({M}reconcile_total{{{sel}}}[$__rate_interval]))",
              "{{worker}} {{result}}")], w=8, unit="ops")
    b.panel("timeseries", "Reconcile error ratio by worker",
            [(f"sum by (worker) (rate({M}reconcile_total{{{sel}, result=\"error\"}}[$__rate_interval]))"
              f" / sum by (worker) (rate({M}reconcile_total{{{sel}}}[$__rate_interval]))",
              "{{worker}}")], w=8, unit="percentunit",
            description="Failed hook calls (non-2xx, timeout, connection error) / all calls.")
    b.panel("timeseries", "Reconcile latency by worker",
            [(f"histogram_quantile(0.5, sum by (worker, le) (rate({M}reconcile_duration_seconds_bucket{{{sel}}}[$__rate_interval])))", "{{worker}} p50"),
             (f"histogram_quantile(0.99, sum by (worker, le) (rate({M}reconcile_duration_seconds_bucket{{{sel}}}[$__rate_interval])))", "{{worker}} p99")],
            w=8, unit="s")
    b.panel("timeseries", "Queue depth by worker",
            [(f"sum by (worker) ({M}queue_depth{{{sel}}})", "{{worker}}")], w=6)
    b.panel("timeseries", "Active workers by worker",
            [(f"sum by (worker) ({M}workers_active{{{sel}}})", "{{worker}}")], w=6,
            description="Reconciles in flight (at most the worker's concurrency).")
    b.panel("timeseries", "Hook latency p99 by status code (all managers)",
            [(f"histogram_quantile(0.99, sum by (code, le) (rate({M}hook_request_duration_seconds_bucket[$__rate_interval])))",
              "{{code}}")], w=6, unit="s",
            description="The hook histogram is labelled by status code only.")
    b.panel("timeseries", "Hook calls by status code (all managers)",
            [(f"sum by (code) (rate({M}hook_request_duration_seconds_count[$__rate_interval]))",
              "{{code}}")], w=6, unit="reqps")
    variables = [
        datasource_var(),
        *scope_vars(),
        query_var("namespace", "Namespace",
                  f'label_values({M}leader{{cluster=~"$cluster", job=~"$job"}}, namespace)'),
        query_var("name", "ManagerConfig",
                  f'label_values({M}leader{{cluster=~"$cluster", job=~"$job", '
                  f'namespace="$namespace"}}, name)'),
    ]
    return b.render(variables)


BOARDS = {"overview.json": overview, "manager-detail.json": detail}


def main(argv):
    rendered = {f: json.dumps(fn(), indent=2, sort_keys=False) + "\n" for f, fn in BOARDS.items()}
    if "--queries" in argv:
        for f, text in rendered.items():
            for p in json.loads(text)["panels"]:
                for t in p.get("targets", []):
                    print(json.dumps({"dashboard": f, "panel": p["title"], "refId": t["refId"],
                                      "expr": t["expr"], "instant": t.get("instant", False)}))
        return 0
    if "--check" in argv:
        stale = [f for f, text in rendered.items()
                 if not (OUT / f).exists() or (OUT / f).read_text() != text]
        if stale:
            print(f"stale dashboards (run hack/chart/gen-dashboards.py): {', '.join(stale)}",
                  file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for f, text in rendered.items():
        (OUT / f).write_text(text)
        print(f"wrote {OUT / f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
