{{/* The chart name, cut to a DNS label. */}}
{{- define "nsapi-token-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of every object: fullnameOverride; else the release name when it contains the chart name
(`helm install nsapi-token-operator ...` gives "nsapi-token-operator"); else "<release>-<chart>".
*/}}
{{- define "nsapi-token-operator.fullname" -}}
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

{{- define "nsapi-token-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nsapi-token-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nsapi-token-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "nsapi-token-operator.labels" -}}
helm.sh/chart: {{ include "nsapi-token-operator.chart" . }}
{{ include "nsapi-token-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "nsapi-token-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nsapi-token-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nsapi-token-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The namespaces watched in scope=namespace, as a JSON list: watchNamespaces, else the release namespace. */}}
{{- define "nsapi-token-operator.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- .Values.watchNamespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/*
The RBAC rules: exactly the Kubernetes API calls the operator makes (src/cluster/), the same
whether granted by a ClusterRole or by a Role per watched namespace.
*/}}
{{- define "nsapi-token-operator.rules" -}}
# The controller lists and watches NsApiCredentials (and lists at start-up to check that the CRD
# is served); each reconcile starts with a get, so it never decides on a stale cached copy.
- apiGroups: [nsapi.io]
  resources: [nsapicredentials]
  verbs: [get, list, watch]
# Status is written with server-side apply (PATCH on the status subresource).
- apiGroups: [nsapi.io]
  resources: [nsapicredentials/status]
  verbs: [patch]
# list+watch: a watch on Secret metadata only (never their data) so that a change of an input or
# output Secret triggers a reconcile. get: read the two input Secrets and the output Secret.
# create: the output Secret. patch: rotate the token in it (server-side apply). delete: the output
# Secret written under a previous spec.tokenSecret.name. Secret names are chosen by users, so
# resourceNames cannot narrow this; scope=namespace narrows it to the watched namespaces.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, delete]
# Events on NsApiCredentials (issue, refresh, fallback, failure); patch updates a repeated event.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# A credential's spec.caBundle in a ConfigMap, read when a token is requested (one in a Secret is
# read under the Secret rule).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
{{- if .Values.rolloutRestart.enabled }}
# rolloutRestart.enabled: spec.rolloutRestartTargets. get: a target's pod template (when it was
# last restarted); patch: its restartedAt annotation, as `kubectl rollout restart` does.
- apiGroups: [apps]
  resources: [deployments, statefulsets, daemonsets]
  verbs: [get, patch]
{{- end }}
{{- if .Values.consumerCheck.enabled }}
# consumerCheck.enabled: after each new token, one list of the credential's namespace's pods, to
# name those that read the token through env vars or subPath mounts (ConsumersCannotRefresh).
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
{{- end }}
{{- end }}

{{/* "true" when caBundle names a ConfigMap or a Secret for --ca-file (not both: the schema). */}}
{{- define "nsapi-token-operator.caSource" -}}
{{- if or .Values.caBundle.configMap .Values.caBundle.secret }}true{{ end }}
{{- end }}

{{/*
An alert's labels and annotations: the chart's (severity, summary, description, runbook_url),
then prometheusRule.alertLabels, then the alert's own labels and annotations, each later one
winning over an earlier one of the same name.
Arguments: rule (.Values.prometheusRule), alert (its entry in rule.alerts), anchor (of the
alert's section in docs/troubleshooting.md), labels (the chart's own labels besides severity),
summary, description.
*/}}
{{- define "nsapi-token-operator.alertMeta" -}}
{{- $labels := mergeOverwrite (dict "severity" .alert.severity) (deepCopy .labels) (deepCopy (.rule.alertLabels | default dict)) (deepCopy (.alert.labels | default dict)) -}}
{{- $annotations := dict "summary" .summary "description" .description -}}
{{- with .rule.runbookUrl }}
{{- $_ := set $annotations "runbook_url" (printf "%s#%s" . $.anchor) -}}
{{- end }}
{{- $annotations = mergeOverwrite $annotations (deepCopy (.alert.annotations | default dict)) -}}
labels:
  {{- toYaml $labels | nindent 2 }}
annotations:
  {{- toYaml $annotations | nindent 2 }}
{{- end }}

{{/*
The scrape endpoint of the ServiceMonitor (pod: false; ports of the Service) and of the
PodMonitor (pod: true; ports of the container, which have the same names), with the scrape
settings of serviceMonitor (both use them). A PodMonitor cannot send Prometheus' own
ServiceAccount token (no bearerTokenFile): with metrics.secure.auth kubernetes it needs
serviceMonitor.bearerTokenSecret.name. Its job label is set to the full name, as a
ServiceMonitor's is (the Service's name), which NsApiTokenOperatorDown looks for.
Arguments: root (the chart's context), pod (bool).
*/}}
{{- define "nsapi-token-operator.scrapeEndpoint" -}}
{{- $v := .root.Values -}}
{{- $m := $v.serviceMonitor -}}
{{- if $v.metrics.secure.enabled }}
port: https-metrics
path: /metrics
scheme: https
tlsConfig:
  {{- with $m.tlsConfig }}
  {{- toYaml . | nindent 2 }}
  {{- else }}
  serverName: {{ printf "%s.%s.svc" (include "nsapi-token-operator.fullname" .root) .root.Release.Namespace }}
  ca:
    secret:
      name: {{ $v.metrics.secure.certSecret | quote }}
      key: ca.crt
  {{- end }}
{{- if eq $v.metrics.secure.auth "kubernetes" }}
{{- with $m.bearerTokenSecret }}
{{- if .name }}
authorization:
  type: Bearer
  credentials:
    name: {{ .name | quote }}
    key: {{ .key | quote }}
{{- else if $.pod }}
{{- fail "podMonitor with metrics.secure.auth=kubernetes needs serviceMonitor.bearerTokenSecret.name: a PodMonitor cannot send Prometheus' own ServiceAccount token" }}
{{- else }}
# Prometheus' own ServiceAccount token; bind that ServiceAccount with metrics.secure.readers.
bearerTokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token
{{- end }}
{{- end }}
{{- end }}
{{- else }}
port: http
path: /metrics
{{- end }}
# The credential metrics carry the credential's own `namespace` label: keep it, rather than
# rename it to exported_namespace under the target's namespace.
honorLabels: {{ $m.honorLabels }}
interval: {{ $m.interval }}
scrapeTimeout: {{ $m.scrapeTimeout }}
{{- if or .pod $m.relabelings }}
relabelings:
  {{- if .pod }}
  - action: replace
    targetLabel: job
    replacement: {{ include "nsapi-token-operator.fullname" .root | quote }}
  {{- end }}
  {{- with $m.relabelings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- with $m.metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
