{{/* Hand-written helpers. The policy-dependent parts are in _generated.tpl / platform.yaml. */}}

{{- define "kftenancy.guard" -}}
{{- $baked := include "kftenancy.generatedPolicy" . | fromJson -}}
{{- if ne (toJson .Values.policy) (toJson $baked) -}}
{{- fail "values.policy differs from the policy this chart was generated from: RBAC, webhooks and mesh policies are rendered from the policy. Regenerate the chart: kftenancy chart --policy YOUR-POLICY.yaml --dir CHART-DIR" -}}
{{- end -}}
{{- if ne .Release.Namespace (include "kftenancy.platformNamespace" .) -}}
{{- fail (printf "install into the policy's platform.namespace %q (helm install -n %s --create-namespace), not %q" (include "kftenancy.platformNamespace" .) (include "kftenancy.platformNamespace" .) .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{- define "kftenancy.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "kftenancy.labels" -}}
app.kubernetes.io/managed-by: kftenancy
app.kubernetes.io/part-of: kftenancy
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "kftenancy.selector" -}}
app.kubernetes.io/name: kftenancy
app.kubernetes.io/component: {{ . }}
{{- end -}}

{{/* Pod security: non-root, read-only root filesystem, no privilege, default seccomp. */}}
{{- define "kftenancy.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "kftenancy.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Spread replicas over nodes (preferred, so a one-node cluster still runs them). */}}
{{- define "kftenancy.antiAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "kftenancy.selector" . | nindent 12 }}
{{- end -}}

{{/* The chart's own CA and serving pairs (certificates.mode=chart), made once per render.
An existing CA Secret is reused while it is valid for more than 30 days, so `helm upgrade`
keeps certificates stable and rotates them before expiry. */}}
{{- define "kftenancy.ensureCerts" -}}
{{- if not (hasKey .Values "__certs") -}}
{{- $ns := .Release.Namespace -}}
{{- $days := int .Values.certificates.durationDays -}}
{{- $ca := dict -}}
{{- $old := lookup "v1" "Secret" $ns "kftenancy-ca" -}}
{{- if and $old $old.data -}}
{{- $crt := index $old.data "tls.crt" | b64dec -}}
{{- $key := index $old.data "tls.key" | b64dec -}}
{{- $ca = buildCustomCert ($crt | b64enc) ($key | b64enc) -}}
{{- else -}}
{{- $ca = genCA "kftenancy-ca" (mul $days 4 | int) -}}
{{- end -}}
{{- $certs := dict "ca" $ca -}}
{{- range $name := list "kftenancy-webhook" "kftenancy-controller" (include "kftenancy.gatewayService" $) -}}
{{- $dns := list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.cluster.local" $name $ns) -}}
{{- $_ := set $certs $name (genSignedCert $name nil $dns $days $ca) -}}
{{- end -}}
{{- $_ := set .Values "__certs" $certs -}}
{{- end -}}
{{- end -}}

{{- define "kftenancy.caBundle" -}}
{{- include "kftenancy.ensureCerts" . -}}
{{- (index .Values "__certs").ca.Cert | b64enc -}}
{{- end -}}

{{/* controller.dataLake: where things go in the controller's container. */}}
{{- define "kftenancy.dataLakeDir" -}}/var/lib/kftenancy/datalake{{- end -}}
{{- define "kftenancy.dataLakeKeyFile" -}}/etc/kftenancy/datalake-key/signing-key{{- end -}}
{{- define "kftenancy.hooksDir" -}}/etc/kftenancy/hooks{{- end -}}
{{- define "kftenancy.dataLakeConfig" -}}
{{ include "kftenancy.dataLakeDir" . }}/{{ .Values.controller.dataLake.configFile }}
{{- end -}}

{{/* The reload command: the one given, or `kftenancy datalake publish` when publish is set. */}}
{{- define "kftenancy.dataLakeReloadCommand" -}}
{{- $d := .Values.controller.dataLake -}}
{{- if $d.reloadCommand -}}
{{ $d.reloadCommand }}
{{- else if $d.publish.namespace -}}
kftenancy datalake publish {{ include "kftenancy.dataLakeConfig" . }} --namespace {{ $d.publish.namespace }}
{{- with $d.publish.secret }} --secret {{ . }}{{ end }}
{{- with $d.publish.restart }} --restart {{ . }}{{ end }}
{{- end -}}
{{- end -}}

{{/* controller.dataLake values that only make sense together: refuse the others with
the fix (the schema checks each value's shape; this checks how they combine). */}}
{{- define "kftenancy.dataLakeGuard" -}}
{{- $d := .Values.controller.dataLake -}}
{{- $p := $d.publish -}}
{{- $provider := include "kftenancy.dataLakeProvider" . -}}
{{- if not $d.enabled -}}
{{- range $name, $set := dict "reloadCommand" $d.reloadCommand "signingKeySecret.name" $d.signingKeySecret.name "publish.namespace" $p.namespace "publish.secret" $p.secret "publish.restart" $p.restart "hooksConfigMap" $d.hooksConfigMap "volume" (ne (len $d.volume) 0) -}}
{{- if $set -}}
{{- fail (printf "controller.dataLake.%s is set but controller.dataLake.enabled is false: the controller would not keep a data-lake configuration (--datalake-config) to use it with. Set controller.dataLake.enabled=true, or unset controller.dataLake.%s" $name $name) -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- if not $provider -}}
{{- fail "controller.dataLake.enabled is true but the policy's dataLake.enabled is false, so there is no storage configuration to keep. Enable the data lake in your policy and regenerate the chart (kftenancy chart --policy YOUR-POLICY.yaml --dir CHART-DIR), or set controller.dataLake.enabled=false" -}}
{{- end -}}
{{- if and (eq $provider "s3compatible") (not $d.signingKeySecret.name) -}}
{{- fail "controller.dataLake.signingKeySecret.name is empty: the policy's dataLake.provider is s3compatible, whose STS signs sessions with a key of at least 32 bytes. Create a Secret (kubectl -n NAMESPACE create secret generic kftenancy-datalake-signing --from-literal=signing-key=\"$(openssl rand -hex 32)\") and set controller.dataLake.signingKeySecret.name=kftenancy-datalake-signing" -}}
{{- end -}}
{{- if and (ne $provider "s3compatible") $d.signingKeySecret.name -}}
{{- fail (printf "controller.dataLake.signingKeySecret.name is set but the policy's dataLake.provider is %s: only s3compatible (SeaweedFS) signs sessions with it. Unset controller.dataLake.signingKeySecret.name" $provider) -}}
{{- end -}}
{{- if and (or $p.secret $p.restart) (not $p.namespace) -}}
{{- fail "controller.dataLake.publish.namespace is empty: publish.secret and publish.restart are objects in the storage's namespace. Set controller.dataLake.publish.namespace (e.g. storage)" -}}
{{- end -}}
{{- if and $p.namespace (not (or $p.secret $p.restart)) -}}
{{- fail (printf "controller.dataLake.publish.namespace is %q but there is nothing to publish: set publish.secret (a Secret the storage mounts) and/or publish.restart (e.g. deployment/seaweedfs-s3)" $p.namespace) -}}
{{- end -}}
{{- if and $p.namespace $d.reloadCommand -}}
{{- fail "controller.dataLake.reloadCommand and controller.dataLake.publish are both set, but the controller runs one command after each change: publish renders `kftenancy datalake publish ...` as it. Unset one" -}}
{{- end -}}
{{- end -}}
{{- end -}}
