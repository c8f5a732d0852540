{{/* Names, labels and small computed values shared by the templates. */}}

{{/* Chart name, or nameOverride. */}}
{{- define "consortium-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every resource name: fullnameOverride, else <release>-<name> (or just the release
name when it already contains the chart name). Truncated to 63 characters (DNS label). */}}
{{- define "consortium-operator.fullname" -}}
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

{{- define "consortium-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "consortium-operator.labels" -}}
helm.sh/chart: {{ include "consortium-operator.chart" . }}
{{ include "consortium-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: consortium-operator
{{- end }}

{{/* Labels that select the operator pods (immutable in a Deployment: keep them stable). */}}
{{- define "consortium-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "consortium-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "consortium-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "consortium-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when image.digest is set. The tag defaults to the
chart's appVersion (never "latest"). */}}
{{- define "consortium-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the metrics Service. */}}
{{- define "consortium-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "consortium-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* policy/v1 where served (Kubernetes >= 1.21), else policy/v1beta1. Both the API list and the
version are checked: `helm template` lists every API it knows whatever --kube-version says. */}}
{{- define "consortium-operator.pdbApiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "policy/v1") (semverCompare ">=1.21.0-0" .Capabilities.KubeVersion.Version) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end }}
{{- end }}

{{/* The namespaces the operator watches, as a JSON list (read it with fromJsonArray): empty
when clusterWide, else watchNamespaces, else the release namespace alone. Fails on both. */}}
{{- define "consortium-operator.watchedNamespaces" -}}
{{- if and .Values.clusterWide .Values.watchNamespaces }}
{{- fail "clusterWide: true watches every namespace; leave watchNamespaces empty (or set clusterWide: false to watch only watchNamespaces)" }}
{{- end }}
{{- if .Values.clusterWide }}
{{- list | toJson }}
{{- else if .Values.watchNamespaces }}
{{- .Values.watchNamespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}
