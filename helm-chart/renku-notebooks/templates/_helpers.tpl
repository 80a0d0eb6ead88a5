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
  z2jh's names, by the rule of z2jh's "jupyterhub.fullname.dash": a string
  fullnameOverride is used as is ("" by default: the hub is "hub"); otherwise
  <release>-jupyterhub. Computed here rather than by include of z2jh's template
  so the chart also renders without the dependency (the tests do).
  "renku-notebooks.z2jhName" takes (list $ "hub"), (list $ "proxy-public"), ...
*/}}
{{- define "renku-notebooks.z2jhName" -}}
{{- $root := index . 0 }}
{{- $jupyterhub := $root.Values.jupyterhub | default dict }}
{{- $override := $jupyterhub.fullnameOverride }}
{{- if kindIs "string" $override }}
{{- if $override }}{{ $override }}-{{ end }}
{{- else }}
{{- $name := $jupyterhub.nameOverride | default "jupyterhub" }}
{{- if contains $name $root.Release.Name }}{{ $root.Release.Name }}-{{ else }}{{ $root.Release.Name }}-{{ $name }}-{{ end }}
{{- end }}
{{- index . 1 }}
{{- end }}

{{- define "renku-notebooks.hubFullname" -}}
{{- include "renku-notebooks.z2jhName" (list . "hub") }}
{{- end }}

{{- /* The hub service whose token the pre-delete hook uses (glue.core.contracts.DRAIN_SUFFIX). */}}
{{- define "renku-notebooks.drainServiceName" -}}
{{- $config := include "renku-notebooks.values" . | fromYaml }}
{{- printf "%s-drain" (($config.service | default dict).name | default "notebooks") }}
{{- end }}

{{- /*
  THE glue image, one value: jupyterhub.custom.notebooks.spawner.cloneImage. The
  glue, the clone and session steps and the git-proxy sidecar of every user pod
  (which the hub builds from that same value), the clone image's pre-puller and the
  pre-delete hook all run it. It lives in the notebooks config because the hub
  reads only z2jh's values; the chart reads them too.
*/}}
{{- define "renku-notebooks.image" -}}
{{- $config := include "renku-notebooks.values" . | fromYaml }}
{{- ($config.spawner | default dict).cloneImage }}
{{- end }}

{{- define "renku-notebooks.imagePullPolicy" -}}
{{- $config := include "renku-notebooks.values" . | fromYaml }}
{{- ($config.images | default dict).pullPolicy | default "IfNotPresent" }}
{{- end }}

{{- /*
  The pull secrets of every pod of ours: z2jh's chart-wide jupyterhub.imagePullSecrets
  (names or {name: ...}), which z2jh gives its own pods and KubeSpawner gives every user
  pod (its clone and session init containers and sidecar run the glue image), plus
  z2jh's imagePullSecret.create one when it injects it. One list for all of them.
*/}}
{{- define "renku-notebooks.imagePullSecrets" -}}
{{- $jh := .Values.jupyterhub | default dict }}
{{- $secrets := list }}
{{- range ($jh.imagePullSecrets | default list) }}
{{- $secrets = append $secrets (kindIs "string" . | ternary (dict "name" .) .) }}
{{- end }}
{{- $create := $jh.imagePullSecret | default dict }}
{{- if and $create.create (hasKey $create "automaticReferenceInjection" | ternary $create.automaticReferenceInjection true) }}
{{- $secrets = append $secrets (dict "name" (include "renku-notebooks.z2jhName" (list . "image-pull-secret"))) }}
{{- end }}
{{- with $secrets | uniq }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
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
{{- /* chartpress's placeholders (chartpress.yaml resetTag): an image nobody can pull, which
  z2jh's image-puller hook would wait on until its timeout */}}
{{- $build := "install the published chart (docs/kubernetes.rst), or build the images with `.venv/bin/chartpress --force-build`, which writes their tags" }}
{{- if contains "set-by-chartpress" (($config.spawner | default dict).cloneImage | default "") }}
{{- fail (printf "jupyterhub.custom.notebooks.spawner.cloneImage (the glue's image, which the clone step of every server runs too) is chartpress's placeholder %q: set it to <registry>/renku-notebooks-glue:<tag>, or %s" $config.spawner.cloneImage $build) }}
{{- end }}
{{- $hubImage := dig "hub" "image" dict (.Values.jupyterhub | default dict) }}
{{- if contains "set-by-chartpress" (toString ($hubImage.tag | default "")) }}
{{- fail (printf "jupyterhub.hub.image.tag (the hub image with renku-notebooks, %s) is chartpress's placeholder: set it to the tag you pushed, or %s" ($hubImage.name | default "its name")  $build) }}
{{- end }}
{{- if contains "set-by-chartpress" (($config.images | default dict).default | default "") }}
{{- fail (printf "jupyterhub.custom.notebooks.images.default (the image servers launch in, unless a commit has its own) is chartpress's placeholder %q: set it to <registry>/renku-notebooks-singleuser:<tag> or another single-user image, or %s" $config.images.default $build) }}
{{- end }}
{{- $userImage := dig "singleuser" "image" dict (.Values.jupyterhub | default dict) }}
{{- if contains "set-by-chartpress" (toString ($userImage.tag | default "")) }}
{{- fail (printf "jupyterhub.singleuser.image.tag (the single-user image pre-pulled onto every node, %s) is chartpress's placeholder: set it to the tag of jupyterhub.custom.notebooks.images.default, or %s" ($userImage.name | default "its name") $build) }}
{{- end }}
{{- if ne ($config.spawner | default dict).kind "kubernetes" }}
{{- fail "jupyterhub.custom.notebooks.spawner.kind must be `kubernetes` in the Helm chart" }}
{{- end }}
{{- $name := ($config.service | default dict).name | default "notebooks" }}
{{- $services := ((.Values.jupyterhub | default dict).hub | default dict).services | default dict }}
{{- if not (hasKey $services $name) }}
{{- fail (printf "jupyterhub.hub.services needs the key %q (jupyterhub.custom.notebooks.service.name): z2jh makes its API token" $name) }}
{{- end }}
{{- if and .Values.uninstallHook.enabled (not (hasKey $services (include "renku-notebooks.drainServiceName" .))) }}
{{- fail (printf "jupyterhub.hub.services needs the key %q for the pre-delete hook's hub token (or set uninstallHook.enabled: false)" (include "renku-notebooks.drainServiceName" .)) }}
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
{{- /* .Values of a subchart is chartutil.Values, which `dig` does not take */}}
{{- $extra = ($z2jh.Values.singleuser | default dict).extraLabels }}
{{- else }}
{{- /* z2jh's default singleuser.extraLabels, under what these values add */}}
{{- $extra = merge (dig "singleuser" "extraLabels" dict $jh) (dict "hub.jupyter.org/network-access-hub" "true") }}
{{- end }}
{{- toYaml (merge $labels ($extra | default dict)) }}
{{- end }}

{{- /*
  The warnings of the NOTES, paragraphs apart by a blank line: `helm install` prints
  them, and the glue logs them at every start (NOTEBOOKS_CHART_WARNINGS), because Helm
  shows only the parent's NOTES when this chart is a dependency (of renku).
*/}}
{{- define "renku-notebooks.warnings" -}}
{{- $config := include "renku-notebooks.values" . | fromYaml }}
{{- $jh := .Values.jupyterhub | default dict }}
{{- $singleuser := $jh.singleuser | default dict }}
{{- $egress := dig "networkPolicy" "egressAllowRules" dict $singleuser }}
{{- $oauth := dig "hub" "config" "GitLabOAuthenticator" dict $jh }}
{{- $provider := $config.provider | default dict }}
{{- $warnings := list }}
{{- if and (not (dig "cloudMetadata" "blockWithIptables" false $singleuser)) (or (not (dig "networkPolicy" "enabled" true $singleuser)) $egress.cloudMetadataServer) }}
{{- $warnings = append $warnings (print `WARNING: jupyterhub.singleuser.networkPolicy (enabled: false, or egressAllowRules.cloudMetadataServer:
true) lets user pods reach the cloud metadata address 169.254.169.254 (and ` "`helm test`" ` fails).`) }}
{{- end }}
{{- if not (include "renku-notebooks.subdomainHost" .) }}
{{- $warnings = append $warnings `WARNING: every user's server shares the hub's origin: a page that one user's server serves runs
with the login of anyone who opens it (their servers, the hub, this service). Give each user an
origin of their own: set jupyterhub.hub.config.JupyterHub.subdomain_host: https://<domain>, add
"--host-routing" to jupyterhub.proxy.chp.extraCommandLineFlags, and point *.<domain> (DNS and the
TLS certificate) at the proxy too (docs/security.rst).` }}
{{- end }}
{{- if and (eq ($provider.kind | default "gitlab") "gitlab") (not $oauth.client_id) }}
{{- $warnings = append $warnings `WARNING: jupyterhub.hub.config.GitLabOAuthenticator.client_id is not set: nobody can log in
until a GitLab OAuth application (scopes read_user, read_api, read_repository, write_repository, redirect URI
<hub URL>hub/oauth_callback) is configured there with its client_secret.` }}
{{- end }}
{{- join "\n\n" $warnings }}
{{- end }}

{{- /*
  What the glue's pods roll on besides the ConfigMap: the inputs of the secrets it reads
  (its cookie key, the hub's service token), not their rendered values, so that an
  unchanged render (helm template, Argo CD, Flux) gives an unchanged checksum while a
  generated value (lookup/randAlphaNum, z2jh's too) is kept: a changed
  secrets.cookieSecret, secrets.existingSecret or
  jupyterhub.hub.services.<name>.apiToken restarts the glue. A Secret of the operator's
  (existingSecret) changes outside Helm: restart the glue then (docs/kubernetes.rst).
*/}}
{{- define "renku-notebooks.secretsChecksum" -}}
{{- $config := include "renku-notebooks.values" . | fromYaml }}
{{- $name := ($config.service | default dict).name | default "notebooks" }}
{{- $service := dig "hub" "services" $name dict (.Values.jupyterhub | default dict) | default dict }}
{{- $token := $service.apiToken | default $service.api_token | default "" }}
{{- list .Values.secrets.cookieSecret .Values.secrets.existingSecret (include "renku-notebooks.hubFullname" .) $name $token | toJson | sha256sum }}
{{- end }}
