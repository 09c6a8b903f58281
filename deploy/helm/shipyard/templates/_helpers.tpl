{{/* Names ----------------------------------------------------------------------------------- */}}

{{- define "shipyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-shipyard, or the release name when it says shipyard already; 63 characters at most */}}
{{- define "shipyard.fullname" -}}
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

{{/* A component's name: (dict "root" $ "suffix" "worker") -> <fullname>-worker */}}
{{- define "shipyard.componentName" -}}
{{- printf "%s-%s" (include "shipyard.fullname" .root) .suffix | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shipyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels: (dict "root" $ "component" "server") -------------------------------------------- */}}

{{- define "shipyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shipyard.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "shipyard.labels" -}}
helm.sh/chart: {{ include "shipyard.chart" .root }}
{{ include "shipyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: shipyard
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{- define "shipyard.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "shipyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "shipyard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secrets: the Secret and key each one is read from -------------------------------------- */}}

{{- define "shipyard.databaseSecretName" -}}
{{- .Values.database.existingSecret | default (include "shipyard.fullname" .) }}
{{- end }}

{{- define "shipyard.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}SHIPYARD_DATABASE_URL{{ end }}
{{- end }}

{{- define "shipyard.redisEnabled" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{- define "shipyard.redisSecretName" -}}
{{- .Values.redis.existingSecret | default (include "shipyard.fullname" .) }}
{{- end }}

{{- define "shipyard.redisSecretKey" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}SHIPYARD_REDIS_URL{{ end }}
{{- end }}

{{- define "shipyard.sessionSecretName" -}}
{{- .Values.session.existingSecret | default (include "shipyard.fullname" .) }}
{{- end }}

{{- define "shipyard.sessionSecretKey" -}}
{{- if .Values.session.existingSecret }}{{ .Values.session.existingSecretKey }}{{ else }}SHIPYARD_SESSION_SECRET{{ end }}
{{- end }}

{{- define "shipyard.s3CredentialsSecretName" -}}
{{- if .Values.artifacts.s3.existingSecret }}{{ .Values.artifacts.s3.existingSecret }}{{ else if .Values.artifacts.s3.accessKeyId }}{{ include "shipyard.fullname" . }}{{ end }}
{{- end }}

{{- define "shipyard.adminKeySecretName" -}}
{{- .Values.bootstrapAdminKey.secretName | default (printf "%s-admin-key" (include "shipyard.fullname" .)) }}
{{- end }}

{{/* What every shipyard container needs ---------------------------------------------------- */}}

{{/* Refuses a release without the state a cluster needs, before anything is made */}}
{{- define "shipyard.validate" -}}
{{- if not (or .Values.database.url .Values.database.existingSecret) }}
{{- fail "database.url (postgresql+psycopg://USER:PASSWORD@HOST:5432/DB) or database.existingSecret is required: replicas share one metadata database" }}
{{- end }}
{{- if not .Values.artifacts.root }}
{{- fail "artifacts.root (e.g. s3://bucket/shipyard) is required: every pod reads the same model bundles and logs" }}
{{- end }}
{{- if and .Values.artifacts.s3.accessKeyId (not .Values.artifacts.s3.secretAccessKey) }}
{{- fail "artifacts.s3.accessKeyId is set without artifacts.s3.secretAccessKey" }}
{{- end }}
{{- end }}

{{/* env: the secrets, each from its Secret key; settings come from the ConfigMap (envFrom).
   The session secret is the server's alone (server-deployment.yaml) */}}
{{- define "shipyard.env" -}}
- name: SHIPYARD_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "shipyard.databaseSecretName" . }}
      key: {{ include "shipyard.databaseSecretKey" . }}
{{- if include "shipyard.redisEnabled" . }}
- name: SHIPYARD_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "shipyard.redisSecretName" . }}
      key: {{ include "shipyard.redisSecretKey" . }}
{{- end }}
{{- with include "shipyard.s3CredentialsSecretName" . }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "shipyard.envFrom" -}}
- configMapRef:
    name: {{ include "shipyard.fullname" . }}
{{- end }}

{{/* Writable places under a read-only root: $SHIPYARD_HOME and /tmp; the project's files */}}
{{- define "shipyard.volumeMounts" -}}
- name: home
  mountPath: /var/lib/shipyard
- name: tmp
  mountPath: /tmp
{{- if .Values.project.files }}
- name: project
  mountPath: /etc/shipyard
  readOnly: true
{{- end }}
{{- end }}

{{/* (dict "root" $ "home" .Values.server.home) */}}
{{- define "shipyard.volumes" -}}
- name: home
  emptyDir:
    sizeLimit: {{ .home.sizeLimit }}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- if .root.Values.project.files }}
- name: project
  configMap:
    name: {{ include "shipyard.componentName" (dict "root" .root "suffix" "project") }}
{{- end }}
{{- end }}

{{- define "shipyard.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "shipyard.securityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/* The migration init container: `shipyard db upgrade` before shipyard starts */}}
{{- define "shipyard.migrateContainer" -}}
{{- if .Values.migrations.enabled }}
- name: migrate
  image: {{ include "shipyard.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["db", "upgrade"]
  env:
    {{- include "shipyard.env" . | nindent 4 }}
  envFrom:
    {{- include "shipyard.envFrom" . | nindent 4 }}
  resources:
    {{- toYaml .Values.migrations.resources | nindent 4 }}
  securityContext:
    {{- include "shipyard.securityContext" . | nindent 4 }}
  volumeMounts:
    {{- include "shipyard.volumeMounts" . | nindent 4 }}
{{- end }}
{{- end }}

{{/* Pod annotations that roll pods when their settings or secrets change */}}
{{- define "shipyard.checksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
