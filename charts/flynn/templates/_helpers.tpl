{{- define "flynn.labels" -}}
app.kubernetes.io/part-of: flynn
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "flynn.image" -}}
{{ .root.Values.image.registry }}/flynn-{{ .name }}:{{ .root.Values.image.tag }}
{{- end -}}
