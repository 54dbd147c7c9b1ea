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
