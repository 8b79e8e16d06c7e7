{{- define "flynn.labels" -}}
app.kubernetes.io/part-of: flynn
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- /* A component's image: <name>.image.repository (default <image.registry>/flynn-<name>),
:tag (default image.tag, else the chart's appVersion) and @digest when given. With a
digest the node pulls exactly what was pushed, whatever the tag now names. */ -}}
{{- define "flynn.image" -}}
{{- $img := (index .root.Values .name).image | default dict -}}
{{- $repo := $img.repository | default (printf "%s/flynn-%s" .root.Values.image.registry .name) -}}
{{- $tag := $img.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{ $repo }}:{{ $tag }}{{ with $img.digest }}@{{ . }}{{ end }}
{{- end -}}

{{- /* A volume for component state: an existing claim, a hostPath (single-node
development clusters such as e2e/cluster, which have no storage provisioner), or a
PersistentVolumeClaim the chart creates (.claim names it). */ -}}
{{- define "flynn.stateVolume" -}}
{{- if .storage.hostPath }}
hostPath: {path: {{ .storage.hostPath }}, type: DirectoryOrCreate}
{{- else }}
persistentVolumeClaim: {claimName: {{ .storage.existingClaim | default .claim }}}
{{- end }}
{{- end -}}

{{- define "flynn.stateClaim" -}}
{{- if and (not .storage.hostPath) (not .storage.existingClaim) }}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ .claim }}
  namespace: {{ .root.Release.Namespace }}
  labels: {{- include "flynn.labels" .root | nindent 4 }}
  annotations:
    # Slugs and repositories outlive an uninstall: deleting them is a decision.
    helm.sh/resource-policy: keep
spec:
  accessModes: [ReadWriteOnce]
  {{- with .storage.storageClassName }}
  storageClassName: {{ . }}
  {{- end }}
  resources: {requests: {storage: {{ .storage.size }}}}
{{- end }}
{{- end -}}

{{- /* The slug store's token: kept across upgrades (lookup), generated on install. */ -}}
{{- define "flynn.shelfToken" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace "flynn-shelf" -}}
{{- if and $existing $existing.data $existing.data.token -}}
{{ $existing.data.token }}
{{- else -}}
{{ randAlphaNum 48 | b64enc }}
{{- end -}}
{{- end -}}

{{- /* Where and how a component's pods are scheduled, and the secrets they pull their
image with: the chart-wide imagePullSecrets, and the component's nodeSelector,
tolerations, affinity and priorityClassName. (.c is the component's values.) */ -}}
{{- define "flynn.podScheduling" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}
