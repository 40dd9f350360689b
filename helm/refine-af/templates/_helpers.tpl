{{/* The chart name, or nameOverride. */}}
{{- define "refine-af.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object name prefix: fullnameOverride, else the release name, with the chart name unless it is in it. */}}
{{- define "refine-af.fullname" -}}
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

{{/* chart-version for the helm.sh/chart label. */}}
{{- define "refine-af.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object: (dict "ctx" $ "component" "minio"). */}}
{{- define "refine-af.labels" -}}
helm.sh/chart: {{ include "refine-af.chart" .ctx }}
{{ include "refine-af.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: refine-af
{{- end }}

{{/* Labels that select a component's pods; never change them (selectors are immutable). */}}
{{- define "refine-af.selectorLabels" -}}
app.kubernetes.io/name: {{ include "refine-af.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* cluster.service_account */}}
{{- define "refine-af.serviceAccountName" -}}
{{- default (include "refine-af.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* cluster.template_name */}}
{{- define "refine-af.workflowTemplateName" -}}
{{- default (include "refine-af.fullname" .) .Values.workflowTemplate.name }}
{{- end }}

{{/* cluster.s3_secret: the existing Secret, or the one this chart creates (or expects) */}}
{{- define "refine-af.s3SecretName" -}}
{{- default (printf "%s-s3" (include "refine-af.fullname" .)) .Values.s3.existingSecret }}
{{- end }}

{{/* Whether the chart creates the S3 Secret: both inline keys set, no existing Secret. */}}
{{- define "refine-af.createSecret" -}}
{{- if and .Values.s3.accessKeyId .Values.s3.secretAccessKey (not .Values.s3.existingSecret) }}true{{ end }}
{{- end }}

{{/* MinIO's object name. */}}
{{- define "refine-af.minioName" -}}
{{- printf "%s-minio" (include "refine-af.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* cluster.s3_endpoint: s3.endpoint, or the chart's MinIO (a namespaced name: Argo's controller reads it too). */}}
{{- define "refine-af.s3Endpoint" -}}
{{- if .Values.s3.endpoint }}
{{- .Values.s3.endpoint }}
{{- else if .Values.minio.enabled }}
{{- printf "http://%s.%s.svc:%d" (include "refine-af.minioName" .) .Release.Namespace (int .Values.minio.port) }}
{{- end }}
{{- end }}

{{/* cluster.cache_pvc: the existing claim, the created one, or empty (an emptyDir per pod). */}}
{{- define "refine-af.cacheClaim" -}}
{{- if .Values.cache.pvc.existingClaim }}
{{- .Values.cache.pvc.existingClaim }}
{{- else if .Values.cache.pvc.create }}
{{- printf "%s-cache" (include "refine-af.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* cluster.roles.<role>.image: (list $ "generate") -> repository:tag, the tag defaulting to appVersion. */}}
{{- define "refine-af.image" -}}
{{- $ctx := index . 0 }}
{{- $image := (index $ctx.Values.roles (index . 1)).image }}
{{- printf "%s:%s" $image.repository (default $ctx.Chart.AppVersion $image.tag) }}
{{- end }}

{{/* GPUs per pod of a GPU role: (list .Values.roles.train "1") -> gpus, or the stage's count when null; "0": none. */}}
{{- define "refine-af.gpus" -}}
{{- $pool := index . 0 }}
{{- if kindIs "invalid" $pool.gpus }}{{ index . 1 }}{{ else }}{{ int $pool.gpus }}{{ end }}
{{- end }}

{{/* Argo's S3 endpoint (host[:port], no scheme) and whether it is plain HTTP. */}}
{{- define "refine-af.artifactEndpoint" -}}
{{- $url := include "refine-af.s3Endpoint" . }}
{{- if $url }}
{{- $url | trimPrefix "https://" | trimPrefix "http://" | trimSuffix "/" }}
{{- else }}
{{- "s3.amazonaws.com" }}
{{- end }}
{{- end }}

{{/* The container securityContext of the chart's own pods (MinIO, the bucket job). */}}
{{- define "refine-af.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
readOnlyRootFilesystem: true
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Every misconfiguration at once, each with what to set (the schema checks types; this checks combinations). */}}
{{- define "refine-af.validateValues" -}}
{{- $errors := list }}
{{- $s3 := .Values.s3 }}
{{- if not $s3.bucket }}
{{- $errors = append $errors "s3.bucket is empty: set it to the bucket runs go to (--set s3.bucket=my-bucket)" }}
{{- end }}
{{- if and $s3.existingSecret (or $s3.accessKeyId $s3.secretAccessKey) }}
{{- $errors = append $errors "s3.existingSecret and s3.accessKeyId/secretAccessKey are both set: keep the existing Secret or the inline keys, not both" }}
{{- end }}
{{- if and (not $s3.existingSecret) (ne (empty $s3.accessKeyId) (empty $s3.secretAccessKey)) }}
{{- $errors = append $errors "only one of s3.accessKeyId and s3.secretAccessKey is set: set both, or neither and use s3.existingSecret" }}
{{- end }}
{{- if .Values.minio.enabled }}
{{- if $s3.endpoint }}
{{- $errors = append $errors (printf "minio.enabled is true and s3.endpoint is set (%s): the chart's MinIO is for clusters without S3; unset s3.endpoint or set minio.enabled=false" $s3.endpoint) }}
{{- end }}
{{- if not (or $s3.existingSecret (and $s3.accessKeyId $s3.secretAccessKey)) }}
{{- $errors = append $errors "minio.enabled needs root credentials: set s3.existingSecret, or s3.accessKeyId and s3.secretAccessKey" }}
{{- else if and $s3.secretAccessKey (lt (len $s3.secretAccessKey) 8) }}
{{- $errors = append $errors "s3.secretAccessKey is MinIO's root password with minio.enabled: make it 8 characters or more" }}
{{- end }}
{{- end }}
{{- if and .Values.cache.pvc.create .Values.cache.pvc.existingClaim }}
{{- $errors = append $errors "cache.pvc.create and cache.pvc.existingClaim are both set: create a claim or use the existing one" }}
{{- end }}
{{- if $errors }}
{{- fail (printf "\n\nrefine-af: fix these values:\n- %s\n" (join "\n- " $errors)) }}
{{- end }}
{{- end }}
