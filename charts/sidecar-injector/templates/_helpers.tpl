{{/* The labels deploy/ gives every object. */}}
{{- define "sidecar-injector.labels" -}}
app.kubernetes.io/name: sidecar-injector
app.kubernetes.io/part-of: sidecar-injector
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{/* The namespaces no webhook is ever sent: the system ones and the release's own. */}}
{{- define "sidecar-injector.excluded" -}}
- key: kubernetes.io/metadata.name
  operator: NotIn
  values: [kube-system, kube-public, kube-node-lease, {{ .Release.Namespace }}]
{{- end }}

{{- define "sidecar-injector.service" -}}
service:
  name: sidecar-injector
  namespace: {{ .Release.Namespace }}
{{- end }}

{{- define "sidecar-injector.podRules" -}}
rules:
  - operations: [CREATE]
    apiGroups: [""]
    apiVersions: [v1]
    resources: [pods]
    scope: Namespaced
{{- end }}
