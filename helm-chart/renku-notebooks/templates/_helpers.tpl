{{- /*
  Names, labels and the rendered notebooks config of the renku-notebooks chart.
  Every resource of ours is named from "renku-notebooks.fullname", which holds
  the release name, so two releases (or this chart under a parent chart such as
  `renku`) never collide. The one exception is the glue's Service, named after
  z2jh's hub (which the hub knows as z2jh.get_name("hub")), so the hub finds it
  without a value written twice; z2jh's own names need
  jupyterhub.fullnameOverride to differ between releases anyway.
*/}}

{{- define "renku-notebooks.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "renku-notebooks.fullname" -}}
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

{{- define "renku-notebooks.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "renku-notebooks.selectorLabels" -}}
app.kubernetes.io/name: {{ include "renku-notebooks.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: glue
{{- end }}

{{- define "renku-notebooks.labels" -}}
helm.sh/chart: {{ include "renku-notebooks.chart" . }}
{{ include "renku-notebooks.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: renku-notebooks
{{- end }}

{{- define "renku-notebooks.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "renku-notebooks.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "renku-notebooks.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "renku-notebooks.fullname" .) }}
{{- end }}

{{- /*
  The z2jh hub's name (its Deployment, Service and Secret), by the rule of
  z2jh's "jupyterhub.fullname": a string fullnameOverride is used as is ("" by
  default: the hub is "hub"); otherwise <release>-jupyterhub. Computed here
  rather than by include of z2jh's template so the chart also renders without
  the dependency (the tests do).
*/}}
{{- define "renku-notebooks.hubFullname" -}}
{{- $jupyterhub := .Values.jupyterhub | default dict }}
{{- $override := $jupyterhub.fullnameOverride }}
{{- if kindIs "string" $override }}
{{- if $override }}{{ $override }}-hub{{ else }}hub{{ end }}
{{- else }}
{{- $name := $jupyterhub.nameOverride | default "jupyterhub" }}
{{- if contains $name .Release.Name }}{{ .Release.Name }}-hub{{ else }}{{ .Release.Name }}-{{ $name }}-hub{{ end }}
{{- end }}
{{- end }}

{{- define "renku-notebooks.hubBaseUrl" -}}
{{- $hub := (.Values.jupyterhub | default dict).hub | default dict }}
{{- $base := $hub.baseUrl | default "/" }}
{{- printf "%s/" (trimSuffix "/" $base) }}
{{- end }}

{{- /* THE notebooks config: under z2jh's `custom`, so z2jh's hub Secret (and its checksum) holds it. */}}
{{- /*
  An unset provider.url is a parent chart's global.gitlab.url, else gitlab.com;
  the hub does the same from its Secret (glue.hub.kubesetup.configure_hub; a test checks
  that they agree).
*/}}
{{- define "renku-notebooks.values" -}}
{{- $config := (((.Values.jupyterhub | default dict).custom | default dict).notebooks | default dict) | deepCopy }}
{{- $provider := $config.provider | default dict }}
{{- if and (eq ($provider.kind | default "gitlab") "gitlab") (not $provider.url) }}
{{- $_ := set $provider "url" (dig "gitlab" "url" "https://gitlab.com" (.Values.global | default dict)) }}
{{- $_ := set $config "provider" $provider }}
{{- end }}
{{- $config | toYaml }}
{{- end }}

{{- define "renku-notebooks.serviceName" -}}
{{- $config := include "renku-notebooks.values" . | fromYaml }}
{{- printf "%s-%s" (include "renku-notebooks.hubFullname" .) (($config.service | default dict).name | default "notebooks") | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "renku-notebooks.servicePrefix" -}}
{{- $config := include "renku-notebooks.values" . | fromYaml }}
{{- include "renku-notebooks.hubBaseUrl" . }}services/{{ ($config.service | default dict).name | default "notebooks" }}/
{{- end }}

{{- /* glue.hub.kubesetup.service_url computes the same on the hub */}}
{{- define "renku-notebooks.serviceUrl" -}}
http://{{ include "renku-notebooks.serviceName" . }}
{{- end }}

{{- /* The notebooks config as the glue loads it: the values, plus the glue's address. */}}
{{- define "renku-notebooks.config" -}}
{{- $config := include "renku-notebooks.values" . | fromYaml }}
{{- $service := $config.service | default dict }}
{{- $_ := set $service "url" (include "renku-notebooks.serviceUrl" .) }}
{{- $_ := set $config "service" $service }}
{{- dict "notebooks" $config | toYaml }}
{{- end }}

{{- /*
  What JSON Schema cannot say and the chart relies on; the glue checks the
  profile rules again at start-up (glue.core.config), this only fails earlier.
*/}}
{{- define "renku-notebooks.validate" -}}
{{- $config := include "renku-notebooks.values" . | fromYaml }}
{{- if ne ($config.spawner | default dict).kind "kubernetes" }}
{{- fail "jupyterhub.custom.notebooks.spawner.kind must be `kubernetes` in the Helm chart" }}
{{- end }}
{{- $name := ($config.service | default dict).name | default "notebooks" }}
{{- $services := ((.Values.jupyterhub | default dict).hub | default dict).services | default dict }}
{{- if not (hasKey $services $name) }}
{{- fail (printf "jupyterhub.hub.services needs the key %q (jupyterhub.custom.notebooks.service.name): z2jh makes its API token" $name) }}
{{- end }}
{{- $seen := dict }}
{{- $defaults := 0 }}
{{- range $config.profiles }}
{{- if hasKey $seen .name }}
{{- fail (printf "jupyterhub.custom.notebooks.profiles: duplicate profile name %q" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- if .default }}{{ $defaults = add1 $defaults }}{{ end }}
{{- end }}
{{- if gt $defaults 1 }}
{{- fail "jupyterhub.custom.notebooks.profiles: more than one profile is marked default" }}
{{- end }}
{{- $subdomainHost := include "renku-notebooks.subdomainHost" . }}
{{- $flags := ((((.Values.jupyterhub | default dict).proxy | default dict).chp | default dict).extraCommandLineFlags | default list) }}
{{- if and $subdomainHost (not (has "--host-routing" $flags)) }}
{{- fail "jupyterhub.hub.config.JupyterHub.subdomain_host is set: the proxy must route by host too; add \"--host-routing\" to jupyterhub.proxy.chp.extraCommandLineFlags" }}
{{- end }}
{{- if and (has "--host-routing" $flags) (not $subdomainHost) }}
{{- fail "jupyterhub.proxy.chp.extraCommandLineFlags has \"--host-routing\" but jupyterhub.hub.config.JupyterHub.subdomain_host is not set: set both, or neither" }}
{{- end }}
{{- end }}

{{- /*
  Where users' servers are: `https://<user>.<domain>` when the hub gives each user an
  origin of their own (z2jh's hub.config.JupyterHub.subdomain_host), else "".
*/}}
{{- define "renku-notebooks.subdomainHost" -}}
{{- dig "hub" "config" "JupyterHub" "subdomain_host" "" (.Values.jupyterhub | default dict) }}
{{- end }}

{{- /* The glue's port in its pod (the Service's port is 80). */}}
{{- define "renku-notebooks.port" -}}
8090
{{- end }}

{{- /* The user pods' git-proxy sidecar: its autosave control port, which only the hub
  reaches (glue.core.contracts.CONTROL_PORT; tests/test_chart.py checks they agree). */}}
{{- define "renku-notebooks.autosavePort" -}}
7481
{{- end }}

{{- /*
  The labels z2jh's hub (its KubeSpawner common labels, singleuser.extraLabels) and
  KubeSpawner (the component) put on every user pod of this release, so that a pod
  carrying them is selected by the same NetworkPolicies as the user pods.
*/}}
{{- define "renku-notebooks.userPodLabels" -}}
{{- $jh := .Values.jupyterhub | default dict }}
{{- $z2jh := index (.Subcharts | default dict) "jupyterhub" }}
{{- $labels := dict
  "app" ($jh.nameOverride | default "jupyterhub" | trunc 63 | trimSuffix "-")
  "heritage" "jupyterhub"
  "release" .Release.Name
  "component" "singleuser-server"
}}
{{- $extra := dict }}
{{- if $z2jh }}
{{- $_ := set $labels "chart" (printf "%s-%s" $z2jh.Chart.Name $z2jh.Chart.Version | replace "+" "_") }}
{{- $extra = dig "singleuser" "extraLabels" dict $z2jh.Values }}
{{- else }}
{{- /* z2jh's default singleuser.extraLabels, under what these values add */}}
{{- $extra = merge (dig "singleuser" "extraLabels" dict $jh) (dict "hub.jupyter.org/network-access-hub" "true") }}
{{- end }}
{{- toYaml (merge $labels ($extra | default dict)) }}
{{- end }}
