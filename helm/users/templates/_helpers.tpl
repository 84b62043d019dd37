{{/* Names and labels, the usual Helm way. */}}
{{- define "users.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "users.fullname" -}}
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

{{- define "users.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "users.labels" -}}
helm.sh/chart: {{ include "users.chart" . }}
app.kubernetes.io/name: {{ include "users.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "users.imageTag" . | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The serving pods. The component is part of the selector so that the
Service, the PodDisruptionBudget and the NetworkPolicy never pick up the
migration Job's pod.
*/}}
{{- define "users.selectorLabels" -}}
app.kubernetes.io/name: {{ include "users.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{/*
The admin Service's own labels, by which the ServiceMonitor picks it and
not the client Service. It selects the same pods as the client Service.
*/}}
{{- define "users.adminServiceLabels" -}}
app.kubernetes.io/name: {{ include "users.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: admin
{{- end }}

{{- define "users.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "users.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "users.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "users.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "users.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
The DATABASE_URL entry: database.url if set, else nothing when env has
one (env is appended after it), else the existing Secret.
*/}}
{{- define "users.databaseEnv" -}}
{{- if .Values.database.url }}
- name: DATABASE_URL
  value: {{ .Values.database.url | quote }}
{{- else if not (include "users.envHas" (list . "DATABASE_URL")) }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret.name }}
      key: {{ .Values.database.existingSecret.key }}
{{- end }}
{{- end }}

{{/* "true" when env has an entry of the name given, else empty: (list . "NATS_URL"). */}}
{{- define "users.envHas" -}}
{{- $name := index . 1 }}
{{- range (index . 0).Values.env }}{{ if eq .name $name }}true{{ end }}{{ end }}
{{- end }}

{{/* The DATABASE_URL entry for the migration Job: its own Secret if given. */}}
{{- define "users.migrationsDatabaseEnv" -}}
{{- if .Values.migrations.existingSecret.name }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.migrations.existingSecret.name }}
      key: {{ .Values.migrations.existingSecret.key }}
{{- else }}
{{- include "users.databaseEnv" . }}
{{- end }}
{{- end }}

{{/*
database.tls.caSecret, for the service and the migration Job alike: the
CA mounted read-only, PGSSLROOTCERT naming it, and PGSSLMODE verify-full,
without which pgx's default (prefer) would ignore the CA and verify
nothing. A URL's own sslmode and sslrootcert win over both.
*/}}
{{- define "users.databaseCAEnv" -}}
{{- if .Values.database.tls.caSecret.name }}
- name: PGSSLMODE
  value: verify-full
- name: PGSSLROOTCERT
  value: /etc/users/database-ca/ca.crt
{{- end }}
{{- end }}

{{- define "users.databaseCAMount" -}}
{{- if .Values.database.tls.caSecret.name }}
- name: database-ca
  mountPath: /etc/users/database-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "users.databaseCAVolume" -}}
{{- with .Values.database.tls.caSecret }}
{{- if .name }}
- name: database-ca
  secret:
    secretName: {{ .name }}
    items:
      - key: {{ .key }}
        path: ca.crt
    # Readable by the pod's fsGroup, not by every user.
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end }}

{{/*
The events' entries. NATS_URL comes from events.nats.url or
events.nats.existingSecret, or from an env entry (appended after these);
with none of them the relay is off and NATS_STREAM and NATS_STREAM_MAX_AGE,
which only the relay reads, are left out. OUTBOX_RETENTION is read only
with the relay off, and set either way: the relay ignores it.
*/}}
{{- define "users.eventsEnv" -}}
{{- if .Values.events.nats.url }}
- name: NATS_URL
  value: {{ .Values.events.nats.url | quote }}
{{- else if .Values.events.nats.existingSecret.name }}
- name: NATS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.events.nats.existingSecret.name }}
      key: {{ .Values.events.nats.existingSecret.key }}
{{- end }}
{{- if include "users.eventsRelayed" . }}
- name: NATS_STREAM
  value: {{ .Values.events.stream | quote }}
- name: NATS_STREAM_MAX_AGE
  value: {{ .Values.events.streamMaxAge | quote }}
{{- end }}
- name: OUTBOX_RETENTION
  value: {{ .Values.events.outboxRetention | quote }}
{{- end }}

{{/* "true" when NATS_URL is set, by events.nats or by env; else empty. */}}
{{- define "users.eventsRelayed" -}}
{{- if or .Values.events.nats.url .Values.events.nats.existingSecret.name (include "users.envHas" (list . "NATS_URL")) }}true{{ end }}
{{- end }}

{{/*
users.validate fails the render on combinations values.schema.json cannot
express. Every template that needs them includes it; it renders nothing.
*/}}
{{- define "users.validate" -}}
{{- $fromEnv := list }}
{{- range .Values.env }}
{{- $fromEnv = append $fromEnv .name }}
{{- end }}
{{- $chartSets := dict
  "GRPC_ADDRESS" "containerPorts.grpc"
  "ADMIN_ADDRESS" "containerPorts.admin"
  "SHUTDOWN_TIMEOUT" "shutdownTimeoutSeconds"
  "DRAIN_DELAY" "drainDelaySeconds"
  "DB_MAX_CONNS" "database.maxConns"
  "GOMAXPROCS" "resources (the CPU request, or a CPU limit the runtime reads itself)"
  "GRPC_TLS_CERT_FILE" "tls"
  "GRPC_TLS_KEY_FILE" "tls"
  "GRPC_TLS_CLIENT_CA_FILE" "tls.clientAuth"
  "IDENTITY_ASSERTING_CLIENTS" "tls.identityAssertingClients"
  "CLUSTER_ADMIN_SUBJECTS" "clusterAdminSubjects"
  "NATS_STREAM" "events.stream"
  "NATS_STREAM_MAX_AGE" "events.streamMaxAge"
  "OUTBOX_RETENTION" "events.outboxRetention" }}
{{- range $name := keys $chartSets | sortAlpha }}
{{- if has $name $fromEnv }}
{{- fail (printf "env sets %s, which the chart sets itself: use %s instead" $name (get $chartSets $name)) }}
{{- end }}
{{- end }}
{{- if and .Values.database.url (include "users.envHas" (list . "DATABASE_URL")) }}
{{- fail "DATABASE_URL is set twice: by database.url and by an env entry; keep one" }}
{{- end }}
{{- if not (or .Values.database.url (include "users.envHas" (list . "DATABASE_URL")) .Values.database.existingSecret.name) }}
{{- fail "DATABASE_URL is not set: give database.existingSecret.name (a Secret with the PostgreSQL URL) or, for development, database.url" }}
{{- end }}
{{- if .Values.database.tls.caSecret.name }}
{{- range $name := list "PGSSLMODE" "PGSSLROOTCERT" }}
{{- if has $name $fromEnv }}
{{- fail (printf "env sets %s, which the chart sets from database.tls.caSecret; keep one" $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.events.nats.url .Values.events.nats.existingSecret.name }}
{{- fail "NATS_URL is set twice: by events.nats.url and by events.nats.existingSecret.name; keep one" }}
{{- end }}
{{- if and (or .Values.events.nats.url .Values.events.nats.existingSecret.name) (include "users.envHas" (list . "NATS_URL")) }}
{{- fail "NATS_URL is set twice: by events.nats and by an env entry; keep one" }}
{{- end }}
{{- $drain := add .Values.lifecycle.preStopSleepSeconds .Values.drainDelaySeconds .Values.shutdownTimeoutSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $drain) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than lifecycle.preStopSleepSeconds plus drainDelaySeconds plus shutdownTimeoutSeconds (%d), or the kubelet kills the pod before it has drained" (int .Values.terminationGracePeriodSeconds) (int $drain)) }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- if not .Values.tls.secretName }}
{{- fail "tls.enabled needs tls.secretName: a kubernetes.io/tls Secret (tls.crt, tls.key, and ca.crt for tls.clientAuth)" }}
{{- end }}
{{- if eq .Values.probes.via "grpc" }}
{{- fail "tls.enabled needs probes.via=http: the kubelet's gRPC probes cannot speak TLS, so they would fail and restart every pod" }}
{{- end }}
{{- end }}
{{- if and .Values.tls.clientAuth (not .Values.tls.enabled) }}
{{- fail "tls.clientAuth needs tls.enabled" }}
{{- end }}
{{- if and .Values.tls.identityAssertingClients (not .Values.tls.clientAuth) }}
{{- fail "tls.identityAssertingClients needs tls.clientAuth: without client certificates the service cannot tell who asserts an identity" }}
{{- end }}
{{- if and .Values.prometheusRule.enabled (not .Values.serviceMonitor.enabled) (not .Values.prometheusRule.selector) }}
{{- fail "prometheusRule.enabled needs serviceMonitor.enabled, or prometheusRule.selector naming how your Prometheus scrapes the pods: the rules read the series the ServiceMonitor scrapes, and without it UsersMetricsAbsent fires for ever and no other alert can" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- end }}
