{{/* Name of the chart, overridable. */}}
{{- define "leaf-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: the release name when it already contains the chart name. */}}
{{- define "leaf-operator.fullname" -}}
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

{{- define "leaf-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "leaf-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "leaf-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "leaf-operator.labels" -}}
helm.sh/chart: {{ include "leaf-operator.chart" . }}
{{ include "leaf-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: leaf-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with include "leaf-operator.commonLabels" . | fromYaml }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
commonLabels over global.commonLabels (the chart's key wins), without the chart's own labels
above: those stay as the chart sets them (the selector depends on them).
*/}}
{{- define "leaf-operator.commonLabels" -}}
{{- $labels := merge (dict) (.Values.commonLabels | default dict) ((.Values.global | default dict).commonLabels | default dict) }}
{{- range $key := list "helm.sh/chart" "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/version" "app.kubernetes.io/component" "app.kubernetes.io/part-of" "app.kubernetes.io/managed-by" }}
{{- $_ := unset $labels $key }}
{{- end }}
{{- if $labels }}{{ toYaml $labels }}{{ end }}
{{- end }}

{{/* global.imagePullSecrets followed by imagePullSecrets, each name once. */}}
{{- define "leaf-operator.imagePullSecrets" -}}
{{- $secrets := concat ((.Values.global | default dict).imagePullSecrets | default list) (.Values.imagePullSecrets | default list) | uniq }}
{{- if $secrets }}{{ toYaml $secrets }}{{ end }}
{{- end }}

{{/* priorityClassName, else global.priorityClassName. */}}
{{- define "leaf-operator.priorityClassName" -}}
{{- default ((.Values.global | default dict).priorityClassName | default "") .Values.priorityClassName }}
{{- end }}

{{/* The CRD is rendered unless crds.enabled or its deprecated alias crds.install is false. */}}
{{- define "leaf-operator.crdsEnabled" -}}
{{- if and (ne (toString .Values.crds.enabled) "false") (ne (toString .Values.crds.install) "false") }}true{{ end }}
{{- end }}

{{- define "leaf-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "leaf-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* [registry/]repository, then @digest or :tag. No default repository: one that names no
published image would only show up as ImagePullBackOff after the install, so an unset one fails
the render with what to do. */}}
{{- define "leaf-operator.image" -}}
{{- $repository := .Values.image.repository }}
{{- if not $repository }}
{{- fail "image.repository is not set, and no public leaf-operator image is published yet. Push one to a registry your cluster pulls from with scripts/release.sh REGISTRY and install the chart it pushes (oci://REGISTRY/charts/leaf-operator), or set --set image.repository=REGISTRY/leaf-operator (with image.tag or image.digest) to an image you pushed or loaded into the nodes (kind load, k3d image import, minikube image load): docs/install.md, \"Getting an image into your cluster\"." }}
{{- end }}
{{- with .Values.image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The leader-election Lease: per release by default, so two releases in one namespace never share one. */}}
{{- define "leaf-operator.leaseName" -}}
{{- default (include "leaf-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The ConfigMap where a registering operator keeps the id of its Leaf webhook: the Lease name + "-alerts-webhook" (src/alerts/webhook_record.rs). */}}
{{- define "leaf-operator.webhookRecordName" -}}
{{- printf "%s-alerts-webhook" (include "leaf-operator.leaseName" .) }}
{{- end }}

{{/* Where the default Leaf account's Secret is mounted (LEAF_ACCOUNT_DIR). */}}
{{- define "leaf-operator.accountDir" -}}
/etc/leaf-operator/leaf-account
{{- end }}

{{/* Leader election is forced on with more than one replica: two active operators would both call Leaf. */}}
{{- define "leaf-operator.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{/*
The rules the operator needs on TrimbleConnections, their Secrets and Events, shared by the
ClusterRole (cluster-wide mode) and the per-namespace Roles (namespaced mode). Each rule says why.
*/}}
{{- define "leaf-operator.watchRules" -}}
# TrimbleConnections: list+watch feed the controller's cache, get re-reads one object, and
# patch/update add and remove the finalizer withleaf.io/trimble-credential.
- apiGroups: ["withleaf.io"]
  resources: ["trimbleconnections"]
  verbs: ["get", "list", "watch", "patch", "update"]
# Status is a subresource: the operator writes conditions and Leaf's view of the credential there.
- apiGroups: ["withleaf.io"]
  resources: ["trimbleconnections/status"]
  verbs: ["get", "patch", "update"]
# Secrets: the operator watches Secret metadata to notice rotations (a metadata-only watch still
# needs list+watch, which the API server authorises as reading the Secrets) and GETs the one
# Secret a TrimbleConnection references to read the Trimble credentials.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
{{- if .Values.reauthorization.enabled }}
# Re-authorization through Leaf Magic Links: the operator writes each grower's link into a Secret
# owned by its TrimbleConnection and deletes it when the link is done. It checks the Secret's
# ownerReference before any change, so it never touches a Secret it did not create; RBAC cannot
# narrow create to names, hence these verbs only when re-authorization is enabled.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create", "patch", "delete"]
{{- end }}
# Events: the operator's own Event publisher (src/controller/events.rs) creates events.k8s.io/v1
# Events and patches an Event's series when the same Event repeats. It never writes core/v1
# Events, so none are granted (kubectl describe shows events.k8s.io Events all the same).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
