'''The templates of the Helm chart that `shipmate.render.helm` writes, as text.

Read only by `shipmate.render.helm`, which copies them into `<app>/templates/` unchanged. They hold
the Kubernetes shape of `shipmate.render.objects` (hardened pods, network policies, secret
delivery, routes, monitoring) and take every per-environment fact from the values; they must stay
in step with `objects.py`, which the integration test checks by rendering them with Helm.

Conventions: strings go through `quote`, numbers through `int` (Helm reads numbers as floats and
would print a large one as `1e+06`), and values of mixed type (`25%` or `0`) through `toJson`.
Kept as Python text rather than package data so that an installed wheel always carries them.
'''

from __future__ import annotations

HELPERS = r'''{{/*
Helpers of the shipmate chart. Every object carries the recommended labels; pods select on
instance and name only, so selectors stay stable across versions.
*/}}

{{/* The instance label: one release of the application per environment. */}}
{{- define "shipmate.instance" -}}
{{- printf "%s-%s" .Values.app.name .Values.environment -}}
{{- end -}}

{{/* A version as a label value: other characters become "-", at most 63, trimmed. */}}
{{- define "shipmate.labelValue" -}}
{{- $v := regexReplaceAll "[^A-Za-z0-9_.-]" (toString .) "-" | trunc 63 | trimAll "-_." -}}
{{- default "unknown" $v -}}
{{- end -}}

{{/* Labels that select the pods of one workload. Context: dict root, name. */}}
{{- define "shipmate.selectorLabels" -}}
app.kubernetes.io/instance: {{ include "shipmate.instance" .root | quote }}
app.kubernetes.io/name: {{ .name | quote }}
{{- end -}}

{{/* The labels of every object. Context: dict root, name, component, version (optional). */}}
{{- define "shipmate.labels" -}}
{{ include "shipmate.selectorLabels" . }}
app.kubernetes.io/component: {{ .component | quote }}
app.kubernetes.io/managed-by: shipmate
app.kubernetes.io/part-of: {{ .root.Values.app.name | quote }}
app.kubernetes.io/version: {{ include "shipmate.labelValue" (.version | default .root.Values.app.version) | quote }}
shipmate.dev/environment: {{ .root.Values.environment | quote }}
{{- end -}}

{{/* The version label of an addon: its image tag, else the application version. */}}
{{- define "shipmate.addonVersion" -}}
{{- if contains ":" .image -}}{{ regexReplaceAll "^.*:" .image "" }}{{- end -}}
{{- end -}}

{{/* Pod security: non-root, seccomp RuntimeDefault. Context: the uid. */}}
{{- define "shipmate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . | int }}
runAsGroup: {{ . | int }}
fsGroup: {{ . | int }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container security: read-only root, no privilege escalation, no capabilities. Context: the uid. */}}
{{- define "shipmate.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ . | int }}
runAsGroup: {{ . | int }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Requests and limits, leaving out amounts that are not set. Context: values resources. */}}
{{- define "shipmate.resources" -}}
{{- $out := dict -}}
{{- range $section, $amounts := . -}}
{{- $kept := dict -}}
{{- range $name, $amount := $amounts -}}
{{- if $amount -}}{{- $_ := set $kept $name (toString $amount) -}}{{- end -}}
{{- end -}}
{{- if $kept -}}{{- $_ := set $out $section $kept -}}{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* A probe. Context: values probe (check http, tcp or exec). */}}
{{- define "shipmate.probe" -}}
initialDelaySeconds: {{ .initialDelaySeconds | int }}
periodSeconds: {{ .periodSeconds | int }}
timeoutSeconds: {{ .timeoutSeconds | int }}
failureThreshold: {{ .failureThreshold | int }}
successThreshold: {{ .successThreshold | int }}
{{- if eq .check "http" }}
httpGet:
  path: {{ .path | quote }}
  port: {{ .port | int }}
  scheme: HTTP
{{- else if eq .check "tcp" }}
tcpSocket:
  port: {{ .port | int }}
{{- else }}
exec:
  command:
    {{- toYaml .command | nindent 4 }}
{{- end }}
{{- end -}}

{{/* TCP ports of a network policy rule. Context: a list of port numbers. */}}
{{- define "shipmate.tcpPorts" -}}
{{- range . }}
- port: {{ . | int }}
  protocol: TCP
{{- end }}
{{- end -}}

{{/* A peer selected by pods of this instance. Context: dict root, name. */}}
{{- define "shipmate.podPeer" -}}
- podSelector:
    matchLabels:
      {{- include "shipmate.selectorLabels" . | nindent 6 }}
{{- end -}}

{{/* Peers anywhere, IPv4 or IPv6: an external addon, which no pod label selects. */}}
{{- define "shipmate.anywhere" -}}
- ipBlock:
    cidr: "0.0.0.0/0"
- ipBlock:
    cidr: "::/0"
{{- end -}}

{{/* A peer selected by namespace. Context: the namespace name. */}}
{{- define "shipmate.namespacePeer" -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ . | quote }}
{{- end -}}

{{/* Where a secret lives in the secret store, as YAML {key, property}. Context: dict root, secret. */}}
{{- define "shipmate.remoteRef" -}}
{{- $v := .root.Values -}}
{{- $remote := $v.secrets.remote | default dict -}}
{{- $ref := get $remote .secret | default (dict "key" (printf "%s/%s/%s" $v.app.name $v.environment .secret)) -}}
{{- toYaml $ref -}}
{{- end -}}

{{/*
The object that delivers the secrets of one owner (a service or an addon) as `<owner>-secrets`:
a SecretProviderClass (CSI driver), an ExternalSecret, or an empty Secret filled by shipmate.
Context: dict root, owner, mounts, and the label context (name, component, version).
*/}}
{{- define "shipmate.secretDelivery" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $name := printf "%s-secrets" .owner -}}
{{- $mounts := .mounts -}}
{{- if eq $v.secrets.delivery "csi" }}
---
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: {{ $name | quote }}
  namespace: {{ $v.namespace | quote }}
  labels:
    {{- include "shipmate.labels" . | nindent 4 }}
spec:
  provider: {{ $v.secrets.store | quote }}
  parameters:
    {{- $objects := list }}
    {{- range $mounts }}
    {{- $ref := include "shipmate.remoteRef" (dict "root" $root "secret" .secret) | fromYaml }}
    {{- if eq $v.secrets.store "vault" }}
    {{- $objects = append $objects (dict
          "objectName" .file "secretPath" $ref.key "secretKey" ($ref.property | default "value")) }}
    {{- else }}
    {{- $objects = append $objects (dict "objectName" $ref.key "objectAlias" .file "objectType" "secretsmanager") }}
    {{- end }}
    {{- end }}
    objects: {{ printf "%s\n" (toYaml $objects) | quote }}
    {{- if eq $v.secrets.store "vault" }}
    roleName: {{ printf "%s-%s" $v.app.name .owner | quote }}
    {{- end }}
  {{- $envMounts := list }}
  {{- range $mounts }}{{ if eq .delivery "env" }}{{ $envMounts = append $envMounts . }}{{ end }}{{ end }}
  {{- if $envMounts }}
  secretObjects:
    - secretName: {{ $name | quote }}
      type: Opaque
      data:
        {{- range $envMounts }}
        - objectName: {{ .file | quote }}
          key: {{ .secret | quote }}
        {{- end }}
  {{- end }}
{{- else if eq $v.secrets.delivery "external-secrets" }}
---
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata:
  name: {{ $name | quote }}
  namespace: {{ $v.namespace | quote }}
  labels:
    {{- include "shipmate.labels" . | nindent 4 }}
spec:
  refreshInterval: 1m
  secretStoreRef:
    kind: ClusterSecretStore
    name: {{ $v.secrets.store | quote }}
  target:
    name: {{ $name | quote }}
    creationPolicy: Owner
    deletionPolicy: Retain
  data:
    {{- range $mounts }}
    {{- $ref := include "shipmate.remoteRef" (dict "root" $root "secret" .secret) | fromYaml }}
    - secretKey: {{ .secret | quote }}
      remoteRef:
        key: {{ $ref.key | quote }}
        {{- if $ref.property }}
        property: {{ $ref.property | quote }}
        {{- end }}
    {{- end }}
{{- else }}
---
apiVersion: v1
kind: Secret
type: Opaque
metadata:
  name: {{ $name | quote }}
  namespace: {{ $v.namespace | quote }}
  labels:
    {{- include "shipmate.labels" . | nindent 4 }}
  annotations:
    shipmate.dev/filled-by: shipmate secrets (values are never written to manifests)
{{- end }}
{{- end -}}

{{/* The pod volume named "secrets" of one owner. Context: dict root, owner, mounts. */}}
{{- define "shipmate.secretVolume" -}}
{{- $name := printf "%s-secrets" .owner -}}
- name: secrets
{{- if eq .root.Values.secrets.delivery "csi" }}
  csi:
    driver: secrets-store.csi.k8s.io
    readOnly: true
    volumeAttributes:
      secretProviderClass: {{ $name | quote }}
{{- else }}
  {{- $items := list }}
  {{- range .mounts }}
  {{- if eq .delivery "file" }}
  {{- $items = append $items (dict "key" .secret "path" .file "mode" 256) }}
  {{- end }}
  {{- end }}
  secret:
    secretName: {{ $name | quote }}
    defaultMode: 256
    optional: false
    items:
      {{- toYaml $items | nindent 6 }}
{{- end }}
{{- end -}}

{{/* The secret mounts of an addon: its password, as a file. Context: the addon name. */}}
{{- define "shipmate.addonMounts" -}}
{{- $secret := printf "%s-password" . -}}
{{- toYaml (list (dict "secret" $secret "delivery" "file" "file" $secret "env" "")) -}}
{{- end -}}

{{/* PromQL label selector of one service. Context: dict root, service, extra (optional). */}}
{{- define "shipmate.promSelector" -}}
{{- printf "{namespace=%q,job=%q%s}" .root.Values.namespace .service (.extra | default "") -}}
{{- end -}}

{{/* PromQL: the share of 5xx responses of one service. Context: dict root, service, window. */}}
{{- define "shipmate.errorRatio" -}}
{{- $errors := include "shipmate.promSelector" (dict "root" .root "service" .service "extra" ",code=~\"5..\"") -}}
{{- $all := include "shipmate.promSelector" (dict "root" .root "service" .service) -}}
{{- printf "sum(rate(http_requests_total%s[%s])) / sum(rate(http_requests_total%s[%s]))"
      $errors .window $all .window -}}
{{- end -}}

{{/* PromQL: the p99 latency of one service, in seconds. Context: dict root, service, window. */}}
{{- define "shipmate.latencyP99" -}}
{{- $selector := include "shipmate.promSelector" (dict "root" .root "service" .service) -}}
{{- printf "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket%s[%s])))"
      $selector .window -}}
{{- end -}}

{{/* A number in PromQL and messages: six decimals at most, no trailing zeros. */}}
{{- define "shipmate.number" -}}
{{- regexReplaceAll "\\.?0+$" (printf "%.6f" (float64 .)) "" | default "0" -}}
{{- end -}}

{{/* Data directory and other writable directories of each addon kind. */}}
{{- define "shipmate.addonPaths" -}}
postgres: {data: /var/lib/postgresql/data, writable: [/var/run/postgresql]}
mysql: {data: /var/lib/mysql, writable: [/var/run/mysqld]}
redis: {data: /data, writable: []}
nats: {data: /data, writable: []}
rabbitmq: {data: /var/lib/rabbitmq, writable: [/etc/rabbitmq/conf.d]}
generic: {data: /data, writable: []}
{{- end -}}
'''

NAMESPACE = r'''{{- /* The namespace, enforcing the restricted Pod Security Standard. */ -}}
apiVersion: v1
kind: Namespace
metadata:
  name: {{ .Values.namespace | quote }}
  labels:
    {{- include "shipmate.labels" (dict "root" $ "name" .Values.app.name "component" "namespace") | nindent 4 }}
    kubernetes.io/metadata.name: {{ .Values.namespace | quote }}
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
    pod-security.kubernetes.io/warn: restricted
'''

NETWORK_POLICIES = r'''{{- /*
Default deny, DNS for everyone, then only the traffic the values imply: callers and the
addons a service uses, the ingress controller for exposed services, Prometheus for metrics,
and backup jobs to the addons they back up.
*/ -}}
{{- $v := .Values -}}
{{- $network := dict "root" $ "name" $v.app.name "component" "network" }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
  namespace: {{ $v.namespace | quote }}
  labels:
    {{- include "shipmate.labels" $network | nindent 4 }}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-dns
  namespace: {{ $v.namespace | quote }}
  labels:
    {{- include "shipmate.labels" $network | nindent 4 }}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
    - to:
        - namespaceSelector:
            matchLabels:
              kubernetes.io/metadata.name: kube-system
          podSelector:
            matchLabels:
              k8s-app: kube-dns
      ports:
        - port: 53
          protocol: UDP
        - port: 53
          protocol: TCP
{{- range $name, $svc := $v.services }}
{{- if $svc }}
{{- $labels := dict "root" $ "name" $name "component" "service" "version" $svc.image.tag }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $name | quote }}
  namespace: {{ $v.namespace | quote }}
  labels:
    {{- include "shipmate.labels" $labels | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "shipmate.selectorLabels" (dict "root" $ "name" $name) | nindent 6 }}
  policyTypes: [Ingress, Egress]
  {{- if or $svc.ingressFrom $svc.expose $svc.metrics }}
  ingress:
    {{- range $svc.ingressFrom }}
    - from:
        {{- include "shipmate.podPeer" (dict "root" $ "name" .name) | nindent 8 }}
      ports:
        {{- include "shipmate.tcpPorts" .ports | nindent 8 }}
    {{- end }}
    {{- with $svc.expose }}
    - from:
        {{- include "shipmate.namespacePeer" $v.ingress.namespace | nindent 8 }}
      ports:
        {{- include "shipmate.tcpPorts" (list .port) | nindent 8 }}
    {{- end }}
    {{- with $svc.metrics }}
    - from:
        {{- include "shipmate.namespacePeer" $v.monitoring.namespace | nindent 8 }}
      ports:
        {{- include "shipmate.tcpPorts" (list .port) | nindent 8 }}
    {{- end }}
  {{- else }}
  ingress: []
  {{- end }}
  {{- $egress := list }}
  {{- range $svc.egress }}{{ if .ports }}{{ $egress = append $egress . }}{{ end }}{{ end }}
  {{- if $egress }}
  egress:
    {{- range $egress }}
    - to:
        {{- if .external }}
        {{- include "shipmate.anywhere" . | nindent 8 }}
        {{- else }}
        {{- include "shipmate.podPeer" (dict "root" $ "name" .name) | nindent 8 }}
        {{- end }}
      ports:
        {{- include "shipmate.tcpPorts" .ports | nindent 8 }}
    {{- end }}
  {{- else }}
  egress: []
  {{- end }}
{{- end }}
{{- end }}
{{- range $name, $addon := $v.addons }}
{{- if and $addon (not $addon.external) }}
{{- $labels := dict "root" $ "name" $name "component" "addon" "version" (include "shipmate.addonVersion" $addon) }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $name | quote }}
  namespace: {{ $v.namespace | quote }}
  labels:
    {{- include "shipmate.labels" $labels | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "shipmate.selectorLabels" (dict "root" $ "name" $name) | nindent 6 }}
  policyTypes: [Ingress, Egress]
  {{- $backedUp := false }}
  {{- range $v.backups }}{{ if and . (eq .addon $name) }}{{ $backedUp = true }}{{ end }}{{ end }}
  {{- if or $addon.users $backedUp }}
  ingress:
    {{- range $addon.users }}
    - from:
        {{- include "shipmate.podPeer" (dict "root" $ "name" .) | nindent 8 }}
      ports:
        {{- include "shipmate.tcpPorts" (list $addon.port) | nindent 8 }}
    {{- end }}
    {{- if $backedUp }}
    - from:
        - podSelector:
            matchLabels:
              app.kubernetes.io/instance: {{ include "shipmate.instance" $ | quote }}
              app.kubernetes.io/component: backup
      ports:
        {{- include "shipmate.tcpPorts" (list $addon.port) | nindent 8 }}
    {{- end }}
  {{- else }}
  ingress: []
  {{- end }}
  egress: []
{{- end }}
{{- end }}
{{- /* Backup jobs: the ports of the addons they back up, in the cluster and outside it. */}}
{{- $inside := dict }}
{{- $outside := dict }}
{{- range $v.backups }}
{{- if . }}
{{- $addon := get $v.addons .addon }}
{{- $port := printf "%05d" ($addon.port | int) }}
{{- if $addon.external }}{{ $_ := set $outside $port true }}{{ else }}{{ $_ := set $inside $port true }}{{ end }}
{{- end }}
{{- end }}
{{- if or $inside $outside }}
{{- $name := printf "%s-backup" $v.app.name }}
{{- $labels := dict "root" $ "name" $name "component" "backup" "version" $v.backupImage.tag }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $name | quote }}
  namespace: {{ $v.namespace | quote }}
  labels:
    {{- include "shipmate.labels" $labels | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      app.kubernetes.io/instance: {{ include "shipmate.instance" $ | quote }}
      app.kubernetes.io/component: backup
  policyTypes: [Ingress, Egress]
  ingress: []
  egress:
    {{- if $inside }}
    - to:
        - podSelector:
            matchLabels:
              app.kubernetes.io/instance: {{ include "shipmate.instance" $ | quote }}
              app.kubernetes.io/component: addon
      ports:
        {{- range keys $inside | sortAlpha }}
        - port: {{ atoi . }}
          protocol: TCP
        {{- end }}
    {{- end }}
    {{- if $outside }}
    - to:
        {{- include "shipmate.anywhere" . | nindent 8 }}
      ports:
        {{- range keys $outside | sortAlpha }}
        - port: {{ atoi . }}
          protocol: TCP
        {{- end }}
    {{- end }}
    - ports:
        - port: 443
          protocol: TCP
{{- end }}
'''

SERVICE_ACCOUNTS = r'''{{- /* A service account only for services that ask for one. */ -}}
{{- range $name, $svc := .Values.services }}
{{- if and $svc $svc.serviceAccount.create }}
{{- $labels := dict "root" $ "name" $name "component" "service" "version" $svc.image.tag }}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $name | quote }}
  namespace: {{ $.Values.namespace | quote }}
  labels:
    {{- include "shipmate.labels" $labels | nindent 4 }}
automountServiceAccountToken: {{ $svc.serviceAccount.automountToken }}
{{- end }}
{{- end }}
'''

CONFIG_MAPS = r'''{{- /* Config (never a secret): environment variables and files of each service. */ -}}
{{- range $name, $svc := .Values.services }}
{{- if $svc }}
{{- $labels := dict "root" $ "name" $name "component" "service" "version" $svc.image.tag }}
{{- if $svc.config }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ printf "%s-config" $name | quote }}
  namespace: {{ $.Values.namespace | quote }}
  labels:
    {{- include "shipmate.labels" $labels | nindent 4 }}
data:
  {{- range $key, $value := $svc.config }}
  {{ $key | quote }}: {{ $value | toString | quote }}
  {{- end }}
{{- end }}
{{- if $svc.configFiles }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ printf "%s-files" $name | quote }}
  namespace: {{ $.Values.namespace | quote }}
  labels:
    {{- include "shipmate.labels" $labels | nindent 4 }}
data:
  {{- range $path, $content := $svc.configFiles }}
  {{ trimAll "/" $path | replace "/" "_" | quote }}: {{ $content | quote }}
  {{- end }}
{{- end }}
{{- end }}
{{- end }}
'''

SECRETS = r'''{{- /* Secret delivery objects of services and addons (see _helpers.tpl). */ -}}
{{- range $name, $svc := .Values.services }}
{{- if and $svc $svc.secrets }}
{{- include "shipmate.secretDelivery" (dict "root" $ "owner" $name "mounts" $svc.secrets
      "name" $name "component" "service" "version" $svc.image.tag) }}
{{- end }}
{{- end }}
{{- /* An addon's password: for its own pod, or for backup jobs when it runs outside the cluster. */}}
{{- range $name, $addon := .Values.addons }}
{{- if $addon }}
{{- $backedUp := false }}
{{- range $.Values.backups }}{{ if and . (eq .addon $name) }}{{ $backedUp = true }}{{ end }}{{ end }}
{{- if or (and (not $addon.external) (ne $addon.kind "generic")) (and $addon.external $backedUp) }}
{{- $mounts := include "shipmate.addonMounts" $name | fromYamlArray }}
{{- include "shipmate.secretDelivery" (dict "root" $ "owner" $name "mounts" $mounts
      "name" $name "component" "addon" "version" (include "shipmate.addonVersion" $addon)) }}
{{- end }}
{{- end }}
{{- end }}
'''

SERVICES = r'''{{- /* ClusterIP services of services with ports (a headless one too for StatefulSets) and addons. */ -}}
{{- define "shipmate.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ .serviceName | quote }}
  namespace: {{ .root.Values.namespace | quote }}
  labels:
    {{- include "shipmate.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  {{- if .headless }}
  clusterIP: None
  publishNotReadyAddresses: true
  {{- end }}
  selector:
    {{- include "shipmate.selectorLabels" . | nindent 4 }}
  ports:
    {{- range .ports }}
    - name: {{ .name | quote }}
      port: {{ .port | int }}
      targetPort: {{ .name | quote }}
      protocol: TCP
    {{- end }}
{{- end -}}
{{- range $name, $svc := .Values.services }}
{{- if and $svc $svc.ports }}
{{- $ctx := dict "root" $ "name" $name "component" "service" "version" $svc.image.tag "ports" $svc.ports }}
---
{{ include "shipmate.service" (merge (dict "serviceName" $name) $ctx) }}
{{- if eq $svc.kind "StatefulSet" }}
---
{{ include "shipmate.service" (merge (dict "serviceName" (printf "%s-headless" $name) "headless" true) $ctx) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $name, $addon := .Values.addons }}
{{- if and $addon (not $addon.external) }}
---
{{ include "shipmate.service" (dict "root" $ "name" $name "serviceName" $name "component" "addon"
      "version" (include "shipmate.addonVersion" $addon) "ports" (list (dict "name" "main" "port" $addon.port))) }}
{{- end }}
{{- end }}
'''

WORKLOADS = r'''{{- /*
One Deployment, StatefulSet or DaemonSet per service: hardened pod, config from ConfigMaps,
secrets as files in the secrets directory, probes, requests and limits, rolling updates.
*/ -}}
{{- $v := .Values -}}
{{- range $name, $svc := $v.services }}
{{- if $svc }}
{{- $labels := dict "root" $ "name" $name "component" "service" "version" $svc.image.tag }}
{{- $selector := include "shipmate.selectorLabels" $labels }}
{{- $dirs := dict }}
{{- range $path := keys ($svc.configFiles | default dict) | sortAlpha }}
{{- $dir := regexReplaceAll "/[^/]*$" $path "" | default "/" }}
{{- $item := dict "key" (trimAll "/" $path | replace "/" "_") "path" (base $path) }}
{{- $_ := set $dirs $dir (append (get $dirs $dir | default list) $item) }}
{{- end }}
---
apiVersion: apps/v1
kind: {{ $svc.kind }}
metadata:
  name: {{ $name | quote }}
  namespace: {{ $v.namespace | quote }}
  labels:
    {{- include "shipmate.labels" $labels | nindent 4 }}
spec:
  {{- if and (ne $svc.kind "DaemonSet") (not $svc.autoscaling) }}
  replicas: {{ $svc.replicas | int }}
  {{- end }}
  revisionHistoryLimit: {{ $v.revisionHistoryLimit | int }}
  selector:
    matchLabels:
      {{- $selector | nindent 6 }}
  {{- if eq $svc.kind "Deployment" }}
  progressDeadlineSeconds: {{ $v.progressDeadlineSeconds | int }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: {{ toJson $svc.update.maxSurge }}
      maxUnavailable: {{ toJson $svc.update.maxUnavailable }}
  {{- else if eq $svc.kind "StatefulSet" }}
  serviceName: {{ printf "%s-headless" $name | quote }}
  podManagementPolicy: OrderedReady
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      partition: 0
  volumeClaimTemplates:
    - metadata:
        name: data
        labels:
          {{- include "shipmate.labels" $labels | nindent 10 }}
      spec:
        accessModes: [ReadWriteOnce]
        resources:
          requests:
            storage: {{ $svc.storage | default "1Gi" | quote }}
  {{- else }}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 0
      maxUnavailable: {{ $svc.update.maxUnavailable | default 1 | toJson }}
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "shipmate.labels" $labels | nindent 8 }}
      {{- with $svc.metrics }}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ .port | int | toString | quote }}
        prometheus.io/path: {{ .path | quote }}
      {{- end }}
    spec:
      automountServiceAccountToken: {{ $svc.serviceAccount.automountToken }}
      {{- if $svc.serviceAccount.create }}
      serviceAccountName: {{ $name | quote }}
      {{- end }}
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $svc.terminationGracePeriodSeconds | int }}
      securityContext:
        {{- include "shipmate.podSecurityContext" $v.runAsUser | nindent 8 }}
      {{- if ne $svc.kind "DaemonSet" }}
      topologySpreadConstraints:
        - labelSelector:
            matchLabels:
              {{- $selector | nindent 14 }}
          maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
      {{- end }}
      containers:
        - name: {{ $name | quote }}
          {{- if $svc.image.digest }}
          image: {{ printf "%s@%s" $svc.image.repository $svc.image.digest | quote }}
          {{- else }}
          image: {{ printf "%s:%s" $svc.image.repository $svc.image.tag | quote }}
          {{- end }}
          imagePullPolicy: IfNotPresent
          {{- with $svc.command }}
          command:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $svc.args }}
          args:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $svc.ports }}
          ports:
            {{- range . }}
            - name: {{ .name | quote }}
              containerPort: {{ .port | int }}
              protocol: TCP
            {{- end }}
          {{- end }}
          env:
            - name: APP_VERSION
              value: {{ $svc.image.tag | quote }}
            - name: SHIPMATE_SECRETS_DIR
              value: {{ $svc.secretsDir | quote }}
            {{- range $svc.secrets }}
            {{- if eq .delivery "env" }}
            - name: {{ .env | quote }}
              valueFrom:
                secretKeyRef:
                  name: {{ printf "%s-secrets" $name | quote }}
                  key: {{ .secret | quote }}
            {{- end }}
            {{- end }}
          {{- if $svc.config }}
          envFrom:
            - configMapRef:
                name: {{ printf "%s-config" $name | quote }}
          {{- end }}
          {{- range $field, $probe := $svc.probes }}
          {{- if $probe }}
          {{ $field }}Probe:
            {{- include "shipmate.probe" $probe | nindent 12 }}
          {{- end }}
          {{- end }}
          resources:
            {{- include "shipmate.resources" $svc.resources | nindent 12 }}
          securityContext:
            {{- include "shipmate.containerSecurityContext" $v.runAsUser | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $svc.secrets }}
            - name: secrets
              mountPath: {{ $svc.secretsDir | quote }}
              readOnly: true
            {{- end }}
            {{- range $index, $dir := keys $dirs | sortAlpha }}
            - name: {{ printf "files-%d" $index }}
              mountPath: {{ $dir | quote }}
              readOnly: true
            {{- end }}
            {{- if eq $svc.kind "StatefulSet" }}
            - name: data
              mountPath: /data
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
        {{- if $svc.secrets }}
        {{- include "shipmate.secretVolume" (dict "root" $ "owner" $name "mounts" $svc.secrets) | nindent 8 }}
        {{- end }}
        {{- range $index, $dir := keys $dirs | sortAlpha }}
        - name: {{ printf "files-%d" $index }}
          configMap:
            name: {{ printf "%s-files" $name | quote }}
            items:
              {{- toYaml (get $dirs $dir) | nindent 14 }}
        {{- end }}
{{- end }}
{{- end }}
'''

ADDONS = r'''{{- /*
Addons that run in the cluster: one StatefulSet each, with the image's own uid, a volume for its
data, and its password read from the secrets directory.
*/ -}}
{{- $v := .Values -}}
{{- $allPaths := include "shipmate.addonPaths" . | fromYaml -}}
{{- $secretsDir := "/var/run/secrets/shipmate" -}}
{{- range $name, $a := $v.addons }}
{{- if and $a (not $a.external) }}
{{- $labels := dict "root" $ "name" $name "component" "addon" "version" (include "shipmate.addonVersion" $a) }}
{{- $paths := get $allPaths $a.kind }}
{{- $password := printf "%s/%s-password" $secretsDir $name }}
{{- $port := $a.port | int }}
{{- $writable := concat $paths.writable ($a.writable | default list) }}
{{- $mounts := dict
      $paths.data (dict "name" "data" "mountPath" $paths.data)
      "/tmp" (dict "name" "tmp" "mountPath" "/tmp") }}
{{- range $i, $dir := $writable }}
{{- $_ := set $mounts $dir (dict "name" (printf "run-%d" $i) "mountPath" $dir) }}
{{- end }}
{{- if ne $a.kind "generic" }}
{{- $_ := set $mounts $secretsDir (dict "name" "secrets" "mountPath" $secretsDir "readOnly" true) }}
{{- end }}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ $name | quote }}
  namespace: {{ $v.namespace | quote }}
  labels:
    {{- include "shipmate.labels" $labels | nindent 4 }}
  annotations:
    ignore.shipmate.dev/SM501: {{ $v.singleAddonReason | quote }}
spec:
  replicas: 1
  revisionHistoryLimit: {{ $v.revisionHistoryLimit | int }}
  serviceName: {{ $name | quote }}
  podManagementPolicy: OrderedReady
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      partition: 0
  selector:
    matchLabels:
      {{- include "shipmate.selectorLabels" $labels | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "shipmate.labels" $labels | nindent 8 }}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: 60
      securityContext:
        {{- include "shipmate.podSecurityContext" $a.runAsUser | nindent 8 }}
      containers:
        - name: {{ ternary $name $a.kind (eq $a.kind "generic") | quote }}
          image: {{ $a.image | quote }}
          imagePullPolicy: IfNotPresent
          {{- if eq $a.kind "redis" }}
          command:
            - sh
            - -c
            - {{ printf "exec redis-server --appendonly yes --requirepass \"$(cat %s)\"" $password | quote }}
          {{- else if eq $a.kind "nats" }}
          command:
            - sh
            - -c
            - {{ printf "exec nats-server --jetstream --store_dir /data --port %d --auth \"$(cat %s)\""
                   $port $password | quote }}
          {{- else if eq $a.kind "rabbitmq" }}
          command:
            - sh
            - -c
            - {{ printf "RABBITMQ_DEFAULT_PASS=\"$(cat %s)\" exec docker-entrypoint.sh rabbitmq-server"
                   $password | quote }}
          {{- end }}
          {{- $env := list }}
          {{- range $key := keys ($a.config | default dict) | sortAlpha }}
          {{- $env = append $env (dict "name" $key "value" (get $a.config $key | toString)) }}
          {{- end }}
          {{- if eq $a.kind "postgres" }}
          {{- $env = append $env (dict "name" "POSTGRES_PASSWORD_FILE" "value" $password) }}
          {{- $env = append $env (dict "name" "PGDATA" "value" "/var/lib/postgresql/data/pgdata") }}
          {{- with $a.databases }}{{ $env = append $env (dict "name" "POSTGRES_DB" "value" (first .)) }}{{ end }}
          {{- else if eq $a.kind "mysql" }}
          {{- $env = append $env (dict "name" "MYSQL_ROOT_PASSWORD_FILE" "value" $password) }}
          {{- with $a.databases }}{{ $env = append $env (dict "name" "MYSQL_DATABASE" "value" (first .)) }}{{ end }}
          {{- else if and (eq $a.kind "rabbitmq") (not (hasKey ($a.config | default dict) "RABBITMQ_DEFAULT_USER")) }}
          {{- $env = append $env (dict "name" "RABBITMQ_DEFAULT_USER" "value" $name) }}
          {{- end }}
          env:
            {{- toYaml $env | nindent 12 }}
          ports:
            - name: main
              containerPort: {{ $port }}
              protocol: TCP
          livenessProbe:
            tcpSocket:
              port: {{ $port }}
            initialDelaySeconds: 30
            periodSeconds: 20
            timeoutSeconds: 2
            failureThreshold: 6
            successThreshold: 1
          readinessProbe:
            tcpSocket:
              port: {{ $port }}
            initialDelaySeconds: 5
            periodSeconds: 10
            timeoutSeconds: 2
            failureThreshold: 3
            successThreshold: 1
          resources:
            {{- include "shipmate.resources" $a.resources | nindent 12 }}
          securityContext:
            {{- include "shipmate.containerSecurityContext" $a.runAsUser | nindent 12 }}
          volumeMounts:
            {{- range $path := keys $mounts | sortAlpha }}
            - {{ toJson (get $mounts $path) }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
        {{- range $i, $dir := $writable }}
        - name: {{ printf "run-%d" $i }}
          emptyDir: {}
        {{- end }}
        {{- if ne $a.kind "generic" }}
        {{- $secretMounts := include "shipmate.addonMounts" $name | fromYamlArray }}
        {{- include "shipmate.secretVolume" (dict "root" $ "owner" $name "mounts" $secretMounts) | nindent 8 }}
        {{- end }}
  volumeClaimTemplates:
    - metadata:
        name: data
        labels:
          {{- include "shipmate.labels" $labels | nindent 10 }}
      spec:
        accessModes: [ReadWriteOnce]
        resources:
          requests:
            storage: {{ $a.storage | quote }}
{{- end }}
{{- end }}
'''

SCALING = r'''{{- /* HorizontalPodAutoscalers and PodDisruptionBudgets (for more than one replica). */ -}}
{{- range $name, $svc := .Values.services }}
{{- if and $svc (ne $svc.kind "DaemonSet") }}
{{- $labels := dict "root" $ "name" $name "component" "service" "version" $svc.image.tag }}
{{- with $svc.autoscaling }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name | quote }}
  namespace: {{ $.Values.namespace | quote }}
  labels:
    {{- include "shipmate.labels" $labels | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: {{ $svc.kind }}
    name: {{ $name | quote }}
  minReplicas: {{ .minReplicas | int }}
  maxReplicas: {{ .maxReplicas | int }}
  {{- $auto := . }}
  {{- $metrics := list }}
  {{- range $resource := list "cpu" "memory" }}
  {{- with get $auto $resource }}
  {{- $target := dict "type" "Utilization" "averageUtilization" (int .) }}
  {{- $metrics = append $metrics (dict "type" "Resource" "resource" (dict "name" $resource "target" $target)) }}
  {{- end }}
  {{- end }}
  metrics:
    {{- toYaml $metrics | nindent 4 }}
{{- end }}
{{- $effective := $svc.replicas | int }}
{{- with $svc.autoscaling }}{{ $effective = .minReplicas | int }}{{ end }}
{{- if gt $effective 1 }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name | quote }}
  namespace: {{ $.Values.namespace | quote }}
  labels:
    {{- include "shipmate.labels" $labels | nindent 4 }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      {{- include "shipmate.selectorLabels" $labels | nindent 6 }}
{{- end }}
{{- end }}
{{- end }}
'''

ROUTES = r'''{{- /* Ingress (or Gateway API HTTPRoute) for each exposed service. */ -}}
{{- $v := .Values -}}
{{- range $name, $svc := $v.services }}
{{- if and $svc $svc.expose }}
{{- $e := $svc.expose }}
{{- $labels := dict "root" $ "name" $name "component" "service" "version" $svc.image.tag }}
---
{{- if eq $v.ingress.kind "gateway" }}
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {{ $name | quote }}
  namespace: {{ $v.namespace | quote }}
  labels:
    {{- include "shipmate.labels" $labels | nindent 4 }}
spec:
  parentRefs:
    - name: {{ $v.ingress.gateway | quote }}
  {{- with $e.host }}
  hostnames:
    - {{ . | quote }}
  {{- end }}
  rules:
    - matches:
        - path:
            type: PathPrefix
            value: {{ $e.path | quote }}
      backendRefs:
        - name: {{ $name | quote }}
          port: {{ $e.port | int }}
{{- else }}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ $name | quote }}
  namespace: {{ $v.namespace | quote }}
  labels:
    {{- include "shipmate.labels" $labels | nindent 4 }}
  {{- if $e.websocket }}
  annotations:
    nginx.ingress.kubernetes.io/proxy-read-timeout: "3600"
    nginx.ingress.kubernetes.io/proxy-send-timeout: "3600"
  {{- end }}
spec:
  ingressClassName: {{ $v.ingress.className | quote }}
  rules:
    - {{- with $e.host }}
      host: {{ . | quote }}
      {{- end }}
      http:
        paths:
          - path: {{ $e.path | quote }}
            pathType: Prefix
            backend:
              service:
                name: {{ $name | quote }}
                port:
                  number: {{ $e.port | int }}
  {{- if and $e.tls $e.host }}
  tls:
    - hosts:
        - {{ $e.host | quote }}
      secretName: {{ $v.ingress.tlsSecret | default (printf "%s-tls" $name) | quote }}
  {{- end }}
{{- end }}
{{- end }}
{{- end }}
'''

MONITORING = r'''{{- /*
ServiceMonitors, the PrometheusRule (per-service alerts, queue backlog, SLO burn rates) and the
dashboard ConfigMap that Grafana's sidecar loads. Metrics are the router's and the usual client
libraries': http_requests_total{code} and http_request_duration_seconds_bucket{le}.
*/ -}}
{{- $v := .Values -}}
{{- $ns := $v.namespace -}}
{{- $app := $v.app.name -}}
{{- $env := $v.environment -}}
{{- $a := $v.monitoring.alerts -}}
{{- range $name, $svc := $v.services }}
{{- if and $svc $svc.metrics }}
{{- $labels := dict "root" $ "name" $name "component" "service" "version" $svc.image.tag }}
{{- $portName := (first $svc.ports).name }}
{{- range $svc.ports }}{{ if eq (.port | int) ($svc.metrics.port | int) }}{{ $portName = .name }}{{ end }}{{ end }}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ $name | quote }}
  namespace: {{ $ns | quote }}
  labels:
    {{- include "shipmate.labels" $labels | nindent 4 }}
spec:
  selector:
    matchLabels:
      {{- include "shipmate.selectorLabels" $labels | nindent 6 }}
  namespaceSelector:
    matchNames:
      - {{ $ns | quote }}
  endpoints:
    - port: {{ $portName | quote }}
      path: {{ $svc.metrics.path | quote }}
      interval: 30s
{{- end }}
{{- end }}
{{- /* Alert rules, in service order. */}}
{{- $rules := list }}
{{- $panels := list }}
{{- $row := 0 }}
{{- range $name, $svc := $v.services }}
{{- if $svc }}
{{- $common := dict "service" $name "namespace" $ns "app" $app "environment" $env }}
{{- $q := dict "root" $ "service" $name "window" "5m" }}
{{- if $svc.metrics }}
{{- $errors := include "shipmate.errorRatio" $q }}
{{- $p99 := include "shipmate.latencyP99" $q }}
{{- $rules = append $rules (dict
      "alert" "HighErrorRate"
      "expr" (printf "(%s) > %s" $errors (include "shipmate.number" $a.errorRate))
      "for" "5m"
      "labels" (merge (dict "severity" "critical") $common)
      "annotations" (dict
        "summary" (printf "%s: more than %s%% of requests fail"
                     $name (include "shipmate.number" (mulf $a.errorRate 100)))
        "description" "5xx share over 5 minutes is {{ $value | humanizePercentage }}."
        "runbook" (printf "shipmate rollout status --env %s; shipmate rollback --env %s" $env $env))) }}
{{- $rules = append $rules (dict
      "alert" "HighLatency"
      "expr" (printf "%s > %s" $p99 (include "shipmate.number" $a.latencyP99Seconds))
      "for" "5m"
      "labels" (merge (dict "severity" "warning") $common)
      "annotations" (dict
        "summary" (printf "%s: p99 latency above %ss" $name (include "shipmate.number" $a.latencyP99Seconds))
        "description" "p99 over 5 minutes is {{ $value | humanizeDuration }}.")) }}
{{- /* Dashboard: one row per service with metrics; request rate, 5xx share, p99. */}}
{{- $targets := list
      (list "requests/s" (printf "sum(rate(http_requests_total%s[5m]))" (include "shipmate.promSelector" $q)) "reqps")
      (list "5xx share" $errors "percentunit")
      (list "p99 latency" $p99 "s") }}
{{- range $col, $t := $targets }}
{{- $panels = append $panels (dict
      "id" (add (mul $row 3) $col 1)
      "type" "timeseries"
      "title" (printf "%s: %s" $name (index $t 0))
      "datasource" (dict "type" "prometheus" "uid" "${datasource}")
      "gridPos" (dict "x" (mul $col 8) "y" (mul $row 8) "w" 8 "h" 8)
      "fieldConfig" (dict "defaults" (dict "unit" (index $t 2)) "overrides" (list))
      "targets" (list (dict "expr" (index $t 1) "refId" "A" "legendFormat" $name))) }}
{{- end }}
{{- $row = add1 $row }}
{{- end }}
{{- $rules = append $rules (dict
      "alert" "ServiceDown"
      "expr" (printf "absent(up%s == 1)" (include "shipmate.promSelector" $q))
      "for" $a.serviceDownFor
      "labels" (merge (dict "severity" "critical") $common)
      "annotations" (dict
        "summary" (printf "%s: no instance is up" $name)
        "description" (printf "No scrape target of %s has answered for %s." $name $a.serviceDownFor))) }}
{{- end }}
{{- end }}
{{- with $a.queueBacklog }}
{{- $rules = append $rules (dict
      "alert" "QueueBacklog"
      "expr" (printf "sum(%s{namespace=%q}) > %d" .metric $ns (.threshold | int))
      "for" "10m"
      "labels" (dict "namespace" $ns "app" $app "environment" $env "severity" "warning")
      "annotations" (dict
        "summary" (printf "more than %d messages wait" (.threshold | int))
        "description" "Backlog is {{ $value }} messages.")) }}
{{- end }}
{{- $groups := list (dict "name" (printf "%s.alerts" $app) "rules" $rules) }}
{{- /* SLOs: error ratios recorded over three windows, alerts on fast and slow error budget burn. */}}
{{- $sloRules := list }}
{{- range $slo, $s := $v.monitoring.slos }}
{{- if $s }}
{{- $budget := subf 1 (divf $s.objective 100) }}
{{- $ratio := printf "slo:%s:error_ratio" (replace "-" "_" $slo) }}
{{- range $window := list "5m" "1h" "6h" }}
{{- $sloRules = append $sloRules (dict "record" (printf "%s%s" $ratio $window)
      "expr" (include "shipmate.errorRatio" (dict "root" $ "service" $s.service "window" $window))) }}
{{- end }}
{{- $labels := dict "slo" $slo "service" $s.service "namespace" $ns "app" $app }}
{{- $objective := include "shipmate.number" $s.objective }}
{{- $fast := include "shipmate.number" (mulf 14.4 $budget) }}
{{- $slow := include "shipmate.number" (mulf 6 $budget) }}
{{- $sloRules = append $sloRules (dict
      "alert" "ErrorBudgetBurnFast"
      "expr" (printf "%s1h > %s and %s5m > %s" $ratio $fast $ratio $fast)
      "for" "2m"
      "labels" (merge (dict "severity" "critical") $labels)
      "annotations" (dict "summary" (printf "%s: error budget of %s%% burns 14x too fast" $slo $objective))) }}
{{- $sloRules = append $sloRules (dict
      "alert" "ErrorBudgetBurnSlow"
      "expr" (printf "%s6h > %s and %s1h > %s" $ratio $slow $ratio $slow)
      "for" "15m"
      "labels" (merge (dict "severity" "warning") $labels)
      "annotations" (dict "summary" (printf "%s: error budget of %s%% burns 6x too fast" $slo $objective))) }}
{{- end }}
{{- end }}
{{- if $sloRules }}
{{- $groups = append $groups (dict "name" (printf "%s.slos" $app) "rules" $sloRules) }}
{{- end }}
{{- $labels := dict "root" $ "name" $app "component" "monitoring" }}
---
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: {{ printf "%s-alerts" $app | quote }}
  namespace: {{ $ns | quote }}
  labels:
    {{- include "shipmate.labels" $labels | nindent 4 }}
spec:
  groups:
    {{- toYaml $groups | nindent 4 }}
{{- $dashboard := dict
      "title" (printf "%s (%s)" $app $env)
      "uid" (printf "shipmate-%s" (include "shipmate.instance" $) | trunc 40)
      "tags" (list "shipmate" $app $env)
      "timezone" "utc"
      "schemaVersion" 39
      "version" 1
      "refresh" "30s"
      "time" (dict "from" "now-1h" "to" "now")
      "templating" (dict "list" (list (dict "name" "datasource" "type" "datasource" "query" "prometheus")))
      "panels" $panels }}
{{- /* Indented JSON with sorted keys, as Python writes it (Go would escape <, > and &). */}}
{{- $json := toPrettyJson $dashboard | replace "\\u003c" "<" | replace "\\u003e" ">" | replace "\\u0026" "&" }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ printf "%s-dashboard" $app | quote }}
  namespace: {{ $ns | quote }}
  labels:
    {{- include "shipmate.labels" $labels | nindent 4 }}
    grafana_dashboard: "1"
data:
  {{ printf "%s.json" $app | quote }}: {{ printf "%s\n" $json | quote }}
'''

BACKUPS = r'''{{- /* One CronJob per backup; it runs `shipmate backup run` with the addon's password mounted. */ -}}
{{- $v := .Values -}}
{{- range $name, $b := $v.backups }}
{{- if $b }}
{{- $jobName := printf "backup-%s" $name }}
{{- $labels := dict "root" $ "name" $jobName "component" "backup" "version" $v.backupImage.tag }}
{{- $kind := get (dict "pitr" "full" "full" "full" "logical" "logical") $b.type }}
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ $jobName | quote }}
  namespace: {{ $v.namespace | quote }}
  labels:
    {{- include "shipmate.labels" $labels | nindent 4 }}
spec:
  schedule: {{ $b.schedule | quote }}
  concurrencyPolicy: Forbid
  failedJobsHistoryLimit: 3
  successfulJobsHistoryLimit: 3
  jobTemplate:
    metadata:
      labels:
        {{- include "shipmate.labels" $labels | nindent 8 }}
    spec:
      backoffLimit: 2
      activeDeadlineSeconds: 21600
      template:
        metadata:
          labels:
            {{- include "shipmate.labels" $labels | nindent 12 }}
        spec:
          automountServiceAccountToken: false
          enableServiceLinks: false
          restartPolicy: OnFailure
          securityContext:
            {{- include "shipmate.podSecurityContext" $v.runAsUser | nindent 12 }}
          containers:
            - name: backup
              image: {{ printf "%s:%s" $v.backupImage.repository $v.backupImage.tag | quote }}
              imagePullPolicy: IfNotPresent
              args:
                - backup
                - run
                - --env
                - {{ $v.environment | quote }}
                - --addon
                - {{ $b.addon | quote }}
                - --type
                - {{ $kind | quote }}
                {{- range $b.tables }}
                - --table
                - {{ . | quote }}
                {{- end }}
              env:
                - name: SHIPMATE_SECRETS_DIR
                  value: /var/run/secrets/shipmate
                - name: SHIPMATE_BACKUP_STORE
                  value: {{ $b.store | quote }}
              resources:
                requests:
                  cpu: 100m
                  memory: 256Mi
                limits:
                  cpu: "1"
                  memory: 1Gi
              securityContext:
                {{- include "shipmate.containerSecurityContext" $v.runAsUser | nindent 16 }}
              volumeMounts:
                - name: secrets
                  mountPath: /var/run/secrets/shipmate
                  readOnly: true
                - name: tmp
                  mountPath: /tmp
          volumes:
            {{- $secretMounts := include "shipmate.addonMounts" $b.addon | fromYamlArray }}
            {{- include "shipmate.secretVolume" (dict "root" $ "owner" $b.addon "mounts" $secretMounts) | nindent 12 }}
            - name: tmp
              emptyDir:
                sizeLimit: 2Gi
{{- end }}
{{- end }}
'''

TEMPLATES: dict[str, str] = {
    "_helpers.tpl": HELPERS,
    "namespace.yaml": NAMESPACE,
    "networkpolicies.yaml": NETWORK_POLICIES,
    "serviceaccounts.yaml": SERVICE_ACCOUNTS,
    "configmaps.yaml": CONFIG_MAPS,
    "secrets.yaml": SECRETS,
    "services.yaml": SERVICES,
    "workloads.yaml": WORKLOADS,
    "addons.yaml": ADDONS,
    "scaling.yaml": SCALING,
    "routes.yaml": ROUTES,
    "monitoring.yaml": MONITORING,
    "backups.yaml": BACKUPS,
}
"""Template file name under `templates/` -> its text."""
