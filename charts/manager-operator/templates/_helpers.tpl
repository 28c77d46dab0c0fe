{{/* Chart name, truncated to 63 characters. */}}
{{- define "manager-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: fullnameOverride, or <release>-<chart> (just <release> when it contains the chart name). */}}
{{- define "manager-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The namespace everything goes into. */}}
{{- define "manager-operator.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "manager-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades. */}}
{{- define "manager-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "manager-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "manager-operator.labels" -}}
helm.sh/chart: {{ include "manager-operator.chart" . }}
{{ include "manager-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: manager-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "manager-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "manager-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "manager-operator.image" -}}
{{- $repo := .Values.image.repository }}
{{- with .Values.image.registry }}
{{- $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Object names shared by several templates (and passed to the operator as flags). */}}
{{- define "manager-operator.webhookServiceName" -}}
{{- printf "%s-webhook" (include "manager-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "manager-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "manager-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "manager-operator.webhookConfigurationName" -}}
{{- include "manager-operator.fullname" . }}
{{- end }}

{{- define "manager-operator.webhookSecretName" -}}
{{- default (printf "%s-webhook-tls" (include "manager-operator.fullname" .)) .Values.webhook.secretName | trunc 253 }}
{{- end }}

{{- define "manager-operator.certificateName" -}}
{{- printf "%s-webhook" (include "manager-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Where cert-manager's Secret is mounted (and what --webhook-cert-dir says). */}}
{{- define "manager-operator.certDir" -}}
/tmp/k8s-webhook-server/serving-certs
{{- end }}

{{/* "true" when the operator manages its own webhook certificate. */}}
{{- define "manager-operator.selfManagedCerts" -}}
{{- if eq .Values.webhook.certMode "self-managed" }}true{{ end }}
{{- end }}

{{/*
A byte quantity value (`64Mi`, or a plain number that YAML decoded as a float) as a flag value.
*/}}
{{- define "manager-operator.bytes" -}}
{{- if kindIs "string" . -}}{{ . }}{{- else -}}{{ . | int64 }}{{- end -}}
{{- end }}

{{/*
The scrape endpoint of the ServiceMonitor and the PodMonitor (after `port`). Secure metrics need
an explicit TLS setting and credentials: the chart never skips verification or sends Prometheus'
own ServiceAccount token (the deprecated bearerTokenFile) on its own.
*/}}
{{- define "manager-operator.scrapeEndpoint" -}}
{{- $sm := .Values.serviceMonitor -}}
path: /metrics
# The operator's metrics carry their own `namespace` label (the ManagerConfig's namespace): with
# honorLabels it wins over the target's (the pod's namespace); without it Prometheus renames it
# to exported_namespace and the chart's dashboards and alerts no longer see it.
honorLabels: {{ $sm.honorLabels }}
interval: {{ $sm.interval }}
scrapeTimeout: {{ $sm.scrapeTimeout }}
{{- if .Values.metrics.secure }}
scheme: https
{{- if not $sm.tlsConfig }}
{{- fail "metrics.secure: set serviceMonitor.tlsConfig (the CA and serverName of the metrics certificate, or insecureSkipVerify: true to accept a self-signed one knowingly)" }}
{{- end }}
tlsConfig:
  {{- toYaml $sm.tlsConfig | nindent 2 }}
{{- if not $sm.authorization }}
{{- fail "metrics.secure: set serviceMonitor.authorization.credentials (a Secret key holding a token of an identity allowed to get /metrics, e.g. a kubernetes.io/service-account-token Secret of Prometheus' ServiceAccount)" }}
{{- end }}
authorization:
  type: {{ $sm.authorization.type | default "Bearer" }}
  credentials:
    {{- toYaml $sm.authorization.credentials | nindent 4 }}
{{- else }}
scheme: http
{{- end }}
{{- with $sm.relabelings }}
relabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $sm.metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* KUBERNETES_SERVICE_HOST/PORT overrides (apiServer.host), for the operator and the test pod. */}}
{{- define "manager-operator.apiServerEnv" -}}
{{- with .Values.apiServer.host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ . | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ $.Values.apiServer.port | quote }}
{{- end }}
{{- end }}
