{{- define "flags.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "flags.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "flags.labels" -}}
{{ include "flags.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "flags.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "flags.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "flags.fullname" .) -}}
{{- end -}}

{{/* Environment shared by the API pods and the migration Job. */}}
{{- define "flags.envFrom" -}}
- configMapRef:
    name: {{ include "flags.fullname" . }}
- secretRef:
    name: {{ include "flags.secretName" . }}
{{- end -}}

{{- define "flags.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "flags.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Several pods need Redis to share snapshots and change events. */}}
{{- define "flags.validate" -}}
{{- if not .Values.secrets.existingSecret -}}
{{- $_ := required "secrets.jwtSecret (32+ characters) or secrets.existingSecret is required" .Values.secrets.jwtSecret -}}
{{- if lt (len .Values.secrets.jwtSecret) 32 -}}
{{- fail "secrets.jwtSecret must be at least 32 characters long" -}}
{{- end -}}
{{- $_ := required "secrets.dbUrl (an external PostgreSQL) or secrets.existingSecret is required" .Values.secrets.dbUrl -}}
{{- if and (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) (not .Values.secrets.redisUrl) -}}
{{- fail "secrets.redisUrl is required when more than one pod runs (autoscaling or replicaCount > 1)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
