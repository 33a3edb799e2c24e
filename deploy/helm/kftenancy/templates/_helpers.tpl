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
