#!/usr/bin/env python3
"""Writes charts/manager-operator/values.schema.json (JSON Schema draft-07).

    hack/chart/gen-schema.py           write it
    hack/chart/gen-schema.py --check   exit 1 when the committed file differs

Kept as code so the schema stays readable and reviewable; every values.yaml key is listed and
unknown keys are refused (additionalProperties: false), so a typo in a values file fails
`helm install` instead of being ignored.
"""
import json
import pathlib
import sys

OUT = pathlib.Path(__file__).resolve().parents[2] / "charts" / "manager-operator" / "values.schema.json"


def obj(props, required=(), extra=False, desc=None):
    o = {"type": "object", "properties": props, "additionalProperties": extra}
    if required:
        o["required"] = list(required)
    if desc:
        o["description"] = desc
    return o


def s(desc=None, **kw):
    o = {"type": "string", **kw}
    if desc:
        o["description"] = desc
    return o


def b():
    return {"type": "boolean"}


def i(minimum=None, maximum=None):
    o = {"type": "integer"}
    if minimum is not None:
        o["minimum"] = minimum
    if maximum is not None:
        o["maximum"] = maximum
    return o


def amap(values=None):
    return {"type": "object", "additionalProperties": values or {"type": "string"}}


def anyobj():
    return {"type": "object"}


def arr(items=None):
    o = {"type": "array"}
    if items:
        o["items"] = items
    return o


GO_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"}
BYTES = {"type": ["string", "integer"], "pattern": r"^[0-9]+(Ki|Mi|Gi|Ti)?$", "minimum": 0}
PORT = i(1, 65535)
INT_OR_PERCENT = {"anyOf": [{"type": "integer", "minimum": 0},
                            {"type": "string", "pattern": r"^([0-9]+%?)?$"}]}
PROBE = obj({"enabled": b(), "periodSeconds": i(1), "failureThreshold": i(1),
             "timeoutSeconds": i(1)}, required=("enabled",))

SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "manager-operator chart values",
    **obj({
        "global": anyobj(),
        "nameOverride": s(),
        "fullnameOverride": s(),
        "namespaceOverride": s(),
        "commonLabels": amap(),
        "replicaCount": i(0),
        "placement": obj({
            "enabled": b(), "handoverBatch": i(1), "handoverInterval": GO_DURATION,
        }),
        "tenantLimits": obj({
            "maxConfigsPerNamespace": i(0), "maxWorkersPerConfig": i(0),
            "minRetryPeriod": GO_DURATION, "minLeaseDuration": GO_DURATION,
            "maxWatchedObjectsPerConfig": i(0), "maxHookCallsPerConfig": i(0),
            "maxWatchCacheBytesPerNamespace": BYTES, "maxWatchCacheBytes": BYTES,
            "maxConcurrentLists": i(0),
        }),
        "image": obj({
            "registry": s(),
            "repository": s(minLength=1),
            "tag": s(),
            "digest": s(pattern=r"^(sha256:[a-f0-9]{64})?$"),
            "pullPolicy": s(enum=["Always", "IfNotPresent", "Never"]),
        }, required=("repository",)),
        "imagePullSecrets": arr(obj({"name": s(minLength=1)}, required=("name",))),
        "serviceAccount": obj({
            "create": b(), "name": s(), "annotations": amap(),
            "automountServiceAccountToken": b(),
        }),
        "crds": obj({"enabled": b(), "keep": b()}),
        "rbac": obj({"create": b(), "metricsReaderClusterRole": b(), "aggregateClusterRoles": b()}),
        "logFormat": s(enum=["json", "text"]),
        "logLevel": s(minLength=1),
        "hookPolicy": obj({
            "allowedSchemes": arr(s(enum=["http", "https"])),
            "allowedHosts": arr(s(minLength=1, pattern=r"^[^,\s]+$")),
            "allowLoopback": b(),
            "deniedNetworks": arr(s(minLength=1, pattern=r"^[0-9a-fA-F.:]+(/[0-9]{1,3})?$")),
            "allowInsecureSecrets": b(),
        }),
        "hostNetwork": b(),
        "apiServer": obj({"host": s(), "port": PORT}),
        "tests": obj({"enabled": b()}),
        "extraArgs": arr(s()),
        "extraEnv": arr(anyobj()),
        "extraVolumes": arr(obj({"name": s(minLength=1)}, required=("name",), extra=True)),
        "extraVolumeMounts": arr(obj({"name": s(minLength=1), "mountPath": s(minLength=1)}, required=("name", "mountPath"), extra=True)),
        "health": obj({"port": PORT}),
        "metrics": obj({
            "port": PORT, "secure": b(),
            "service": obj({"enabled": b(), "annotations": amap()}),
        }),
        "webhook": obj({
            "port": PORT,
            "failurePolicy": s(enum=["Fail", "Ignore"]),
            "timeoutSeconds": i(1, 30),
            "url": s(pattern=r"^(https://[^\s?#]+)?$",
                     desc="https URL without query or fragment, or empty for Service mode"),
            "namespaceSelector": anyobj(),
            "annotations": amap(),
            "certMode": s(enum=["self-managed", "cert-manager"]),
            "secretName": s(),
            "certManager": obj({
                "issuerRef": obj({"name": s(minLength=1),
                                  "kind": s(enum=["Issuer", "ClusterIssuer"]),
                                  "group": s()}),
                "duration": GO_DURATION,
                "renewBefore": GO_DURATION,
                "caDuration": GO_DURATION,
            }),
            "service": obj({"port": PORT, "annotations": amap()}),
        }),
        "networkPolicy": {
            **obj({
                "enabled": b(),
                "webhookFrom": arr(anyobj()),
                "metricsFrom": arr(anyobj()),
            }),
            # Enabled without webhookFrom would open the webhook to everyone: refuse it.
            "if": {"properties": {"enabled": {"const": True}}, "required": ["enabled"]},
            "then": {"properties": {"webhookFrom": {"minItems": 1}}},
        },
        "resources": anyobj(),
        "podSecurityContext": anyobj(),
        "securityContext": anyobj(),
        "probes": obj({"startup": PROBE, "liveness": PROBE, "readiness": PROBE}),
        "terminationGracePeriodSeconds": i(0),
        "podAntiAffinityPreset": s(enum=["soft", "hard", "none"]),
        "affinity": anyobj(),
        "nodeSelector": amap(),
        "tolerations": arr(anyobj()),
        "topologySpreadConstraints": arr(anyobj()),
        "priorityClassName": s(),
        "podAnnotations": amap(),
        "podLabels": amap(),
        "deploymentAnnotations": amap(),
        "updateStrategy": anyobj(),
        "podDisruptionBudget": obj({
            "enabled": b(), "minAvailable": INT_OR_PERCENT, "maxUnavailable": INT_OR_PERCENT,
            "unhealthyPodEvictionPolicy": s(enum=["", "AlwaysAllow", "IfHealthyBudget"]),
        }),
        "serviceMonitor": obj({
            "enabled": b(), "namespace": s(), "labels": amap(),
            "interval": GO_DURATION, "scrapeTimeout": GO_DURATION,
            "relabelings": arr(anyobj()), "metricRelabelings": arr(anyobj()),
            "honorLabels": b(),
            "tlsConfig": anyobj(),
            "authorization": obj({
                "type": s(),
                "credentials": obj({"name": s(minLength=1), "key": s(minLength=1),
                                    "optional": b()}, required=("name", "key")),
            }),
        }),
        "podMonitor": obj({"enabled": b(), "namespace": s(), "labels": amap()}),
        "leaseFlowControl": obj({
            "enabled": b(),
            "matchingPrecedence": i(1, 9999),
            "distinguisherMethod": s(enum=["ByUser", "ByNamespace", "None"]),
            "priorityLevel": obj({
                "create": b(),
                "name": s(),
                "nominalConcurrencyShares": i(0),
                "lendablePercent": i(0, 100),
                "queuing": obj({"queues": i(1), "handSize": i(1), "queueLengthLimit": i(1)}),
            }),
        }),
        "prometheusRule": obj({
            "enabled": b(), "namespace": s(), "labels": amap(),
            "runbookBaseURL": s(pattern=r"^https?://"),
            "additionalAlertLabels": amap(),
            "additionalAggregationLabels": arr(s(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")),
            "alertOverrides": amap(obj({
                "for": GO_DURATION, "severity": s(), "labels": amap(), "disabled": b(),
            })),
        }),
        "dashboards": obj({
            "enabled": b(), "namespace": s(), "labels": amap(), "annotations": amap(),
        }),
    }),
}


def main(argv):
    text = json.dumps(SCHEMA, indent=2, ensure_ascii=False) + "\n"
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run hack/chart/gen-schema.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
