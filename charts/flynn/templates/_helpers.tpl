{{- /* The prefix of every object's name: the release name when it already says "flynn"
(`helm install flynn` gives flynn-operator, flynn-router, ...), else <release>-flynn, so
two releases in one cluster do not collide. fullnameOverride replaces it. */ -}}
{{- define "flynn.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{ .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else if contains "flynn" .Release.Name -}}
{{ .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else -}}
{{ printf "%s-flynn" .Release.Name | trunc 40 | trimSuffix "-" }}
{{- end -}}
{{- end -}}

{{- /* The labels of every object of the release. */ -}}
{{- define "flynn.labels" -}}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: flynn
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- /* What a component's workload selects its pods by. Never changed: a Deployment's or
DaemonSet's selector is immutable, and an upgrade that changed it would fail. */ -}}
{{- define "flynn.selectorLabels" -}}
app.kubernetes.io/name: flynn-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- /* A component's objects and pods: the release's labels, its selector, its role. */ -}}
{{- define "flynn.componentLabels" -}}
{{ include "flynn.labels" .root }}
app.kubernetes.io/name: flynn-{{ .component }}
app.kubernetes.io/component: {{ .component }}
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
development clusters without a storage provisioner; not allowed under Pod Security
"baseline" or "restricted"), or a PersistentVolumeClaim the chart creates (.claim). */ -}}
{{- define "flynn.stateVolume" -}}
{{- if .storage.hostPath }}
hostPath: {path: {{ .storage.hostPath }}, type: DirectoryOrCreate}
{{- else }}
persistentVolumeClaim: {claimName: {{ .storage.existingClaim | default .claim }}}
{{- end }}
{{- end -}}

{{- define "flynn.stateClaim" -}}
{{- if and (not .storage.hostPath) (not .storage.existingClaim) }}
{{- /* A claim's storage class cannot change: say so before Helm applies half the
upgrade and then fails on the claim. */}}
{{- $existing := lookup "v1" "PersistentVolumeClaim" .root.Release.Namespace .claim }}
{{- $was := ($existing.spec | default dict).storageClassName | default "" }}
{{- if and $existing .storage.storageClassName (ne $was .storage.storageClassName) }}
{{- fail (printf "%s.storage.storageClassName=%s, but the claim %s/%s holds the data on class %q, and a claim's class cannot change: keep %q, or copy the data to a claim of the new class and name it in %s.storage.existingClaim" .component .storage.storageClassName .root.Release.Namespace .claim $was $was .component) }}
{{- end }}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ .claim }}
  namespace: {{ .root.Release.Namespace }}
  labels: {{- include "flynn.componentLabels" (dict "root" .root "component" .component) | nindent 4 }}
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

{{- /* The Secret holding the slug store's token: the platform team's (shelf.token.
existingSecret), else the one the store creates on its first start and nothing in the
chart owns, so no render (helm template, an Argo CD sync, a reinstall) can replace it.
An installation from before that keeps the token it has (flynn.legacyShelfToken). */ -}}
{{- define "flynn.shelfTokenSecret" -}}
{{- if .Values.shelf.token.existingSecret -}}
{{ .Values.shelf.token.existingSecret }}
{{- else if include "flynn.legacyShelfToken" . -}}
{{ include "flynn.fullname" . }}-shelf
{{- else -}}
{{ include "flynn.fullname" . }}-shelf-token
{{- end -}}
{{- end -}}

{{- /* Charts before 0.2 rendered the token into the Secret <fullname>-shelf. Helm would
delete it on an upgrade that no longer renders it, and every Release's slug URL would stop
working: while it exists, it stays (rendered as it is, kept on uninstall) and is the one
used. Empty under `helm template`, which cannot look. */ -}}
{{- define "flynn.legacyShelfToken" -}}
{{- if not .Values.shelf.token.existingSecret -}}
{{- $s := lookup "v1" "Secret" .Release.Namespace (printf "%s-shelf" (include "flynn.fullname" .)) -}}
{{- if and $s $s.data (index $s.data "token") -}}
{{ index $s.data "token" }}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* The port in developers' git remotes: publicPort, else the fixed node port of a
NodePort Service, else sshPort. */ -}}
{{- define "flynn.gitPort" -}}
{{- $g := .Values.gitreceiver -}}
{{- if $g.publicPort -}}
{{ $g.publicPort }}
{{- else if and (not $g.hostNetwork) (eq $g.service.type "NodePort") $g.service.nodePort -}}
{{ $g.service.nodePort }}
{{- else -}}
{{ $g.sshPort }}
{{- end -}}
{{- end -}}

{{- /* Where and how a component's pods are scheduled, the secrets they pull their image
with, and their pod security context: the chart-wide imagePullSecrets, and the
component's nodeSelector, tolerations, affinity (.defaultAffinity when it sets none),
priorityClassName and podSecurityContext. (.c is the component's values.) */ -}}
{{- define "flynn.podSpec" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.c.affinity | default .defaultAffinity) }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .c.podSecurityContext }}
securityContext: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- /* Fails the render when `namespace` enforces a Pod Security level that forbids host
networking (baseline and restricted both do), before anything is applied. Only when the
namespace exists and the render can see the cluster (not under `helm template`). */ -}}
{{- define "flynn.requireHostNetwork" -}}
{{- $ns := lookup "v1" "Namespace" "" .namespace -}}
{{- if $ns -}}
{{- $level := (index ($ns.metadata.labels | default dict) "pod-security.kubernetes.io/enforce") | default "privileged" -}}
{{- if ne $level "privileged" -}}
{{- fail (printf "%s runs on the node's network (hostNetwork), which namespace %s forbids: it enforces Pod Security %q. %s" .what .namespace $level .fix) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* The Secret holding the platform Postgres' superuser password (key `password`): the
platform team's (postgres.admin.existingSecret), else the one the chart's hook makes once. */ -}}
{{- define "flynn.postgresAdminSecret" -}}
{{ .Values.postgres.admin.existingSecret | default (printf "%s-postgres-admin" (include "flynn.fullname" .)) }}
{{- end -}}
