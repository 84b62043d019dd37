package chart

import (
	"strings"
	"testing"
)

// TestRefusals: values that are wrong must fail at helm template (and so
// at install, and in Argo CD's render), with a message that says what to
// change, rather than render something that breaks in the cluster.
func TestRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{
			name:    "a misspelt top-level key (values.schema.json)",
			args:    []string{"--set", "replicaCont=3"},
			wantErr: "additional properties 'replicaCont' not allowed",
		},
		{
			name:    "a misspelt nested key",
			args:    []string{"--set", "image.tagg=1.2.3"},
			wantErr: "additional properties 'tagg' not allowed",
		},
		{
			name:    "a misspelt key in a values file",
			args:    []string{"-f", "ci/everything-values.yaml", "--set", "serviceMonitor.intervall=10s"},
			wantErr: "additional properties 'intervall' not allowed",
		},
		{
			name:    "a value of the wrong type",
			args:    []string{"--set-string", "replicaCount=two"},
			wantErr: "replicaCount",
		},
		{
			name:    "an unknown probe mechanism",
			args:    []string{"--set", "probes.via=tcp"},
			wantErr: "value must be one of 'grpc', 'http'",
		},
		{
			name:    "a grace period no longer than the drain",
			args:    []string{"--set", "terminationGracePeriodSeconds=20"},
			wantErr: "terminationGracePeriodSeconds (20) must be greater than lifecycle.preStopSleepSeconds plus drainDelaySeconds plus shutdownTimeoutSeconds (25)",
		},
		{
			name:    "a grace period that forgets the drain delay",
			args:    []string{"--set", "terminationGracePeriodSeconds=25"},
			wantErr: "terminationGracePeriodSeconds (25) must be greater than lifecycle.preStopSleepSeconds plus drainDelaySeconds plus shutdownTimeoutSeconds (25)",
		},
		{
			name:    "a grace period that forgets the preStop sleep",
			args:    []string{"--set", "lifecycle.preStopSleepSeconds=10"},
			wantErr: "must be greater than lifecycle.preStopSleepSeconds plus drainDelaySeconds plus shutdownTimeoutSeconds (35)",
		},
		{
			name:    "a negative drain delay",
			args:    []string{"--set", "drainDelaySeconds=-1"},
			wantErr: "/drainDelaySeconds",
		},
		{
			name:    "a pool of no connections",
			args:    []string{"--set", "database.maxConns=0"},
			wantErr: "/database/maxConns",
		},
		{
			name:    "a NetworkPolicy peer that is not one",
			args:    []string{"--set", "networkPolicy.grpcFrom[0].podselector.matchLabels.app=gateway"},
			wantErr: "additional properties 'podselector' not allowed",
		},
		{
			name:    "an empty NetworkPolicy peer, which the API server refuses",
			args:    []string{"--set-json", `networkPolicy.adminFrom=[{}]`},
			wantErr: "/networkPolicy/adminFrom/0",
		},
		{
			name:    "TLS with the kubelet's gRPC probes, which cannot speak it",
			args:    []string{"--set", "tls.enabled=true,tls.secretName=users-tls"},
			wantErr: "tls.enabled needs probes.via=http",
		},
		{
			name:    "TLS without a Secret",
			args:    []string{"--set", "tls.enabled=true,probes.via=http"},
			wantErr: "tls.enabled needs tls.secretName",
		},
		{
			name:    "no DATABASE_URL at all",
			args:    []string{"--set", "database.existingSecret.name="},
			wantErr: "DATABASE_URL is not set",
		},
		{
			name:    "DATABASE_URL twice",
			args:    []string{"--set", "database.url=postgresql://a@b/c,env[0].name=DATABASE_URL,env[0].value=postgresql://d@e/f"},
			wantErr: "DATABASE_URL is set twice",
		},
		{
			name:    "env setting what the chart sets",
			args:    []string{"--set", "env[0].name=SHUTDOWN_TIMEOUT,env[0].value=5s"},
			wantErr: "env sets SHUTDOWN_TIMEOUT, which the chart sets itself: use shutdownTimeoutSeconds instead",
		},
		{
			name:    "env setting the drain delay",
			args:    []string{"--set", "env[0].name=DRAIN_DELAY,env[0].value=1s"},
			wantErr: "env sets DRAIN_DELAY, which the chart sets itself: use drainDelaySeconds instead",
		},
		{
			name:    "env setting the pool size",
			args:    []string{"--set", "env[0].name=DB_MAX_CONNS,env[0].value=64"},
			wantErr: "env sets DB_MAX_CONNS, which the chart sets itself: use database.maxConns instead",
		},
		{
			name:    "env setting GOMAXPROCS",
			args:    []string{"--set", "env[0].name=GOMAXPROCS,env[0].value=8"},
			wantErr: "env sets GOMAXPROCS, which the chart sets itself: use resources",
		},
		{
			name:    "env setting what events.* sets",
			args:    []string{"--set", "env[0].name=OUTBOX_RETENTION,env[0].value=1h"},
			wantErr: "env sets OUTBOX_RETENTION, which the chart sets itself: use events.outboxRetention instead",
		},
		{
			name:    "env setting the stream, even with the relay off",
			args:    []string{"--set", "env[0].name=NATS_STREAM,env[0].value=EVENTS"},
			wantErr: "env sets NATS_STREAM, which the chart sets itself: use events.stream instead",
		},
		{
			name:    "NATS_URL as a plain value and from a Secret",
			args:    []string{"--set", "events.nats.url=nats://nats:4222,events.nats.existingSecret.name=users-nats"},
			wantErr: "NATS_URL is set twice: by events.nats.url and by events.nats.existingSecret.name",
		},
		{
			name:    "NATS_URL from a Secret and in env",
			args:    []string{"--set", "events.nats.existingSecret.name=users-nats,env[0].name=NATS_URL,env[0].value=nats://nats:4222"},
			wantErr: "NATS_URL is set twice: by events.nats and by an env entry",
		},
		{
			name:    "a misspelt events key",
			args:    []string{"--set", "events.nats.existingSecret.nmae=users-nats"},
			wantErr: "additional properties 'nmae' not allowed",
		},
		{
			name:    "a stream name JetStream refuses",
			args:    []string{"--set", "events.stream=agyn.users"},
			wantErr: "/events/stream",
		},
		{
			name:    "a retention in days, which Go durations do not have",
			args:    []string{"--set", "events.outboxRetention=7d"},
			wantErr: "/events/outboxRetention",
		},
		{
			name:    "alerts on series nothing scrapes",
			args:    []string{"--set", "prometheusRule.enabled=true"},
			wantErr: "prometheusRule.enabled needs serviceMonitor.enabled, or prometheusRule.selector",
		},
		{
			name:    "a latency threshold beyond the histogram's last bucket",
			args:    []string{"-f", "ci/everything-values.yaml", "--set", "prometheusRule.latency.thresholdSeconds=5"},
			wantErr: "/prometheusRule/latency/thresholdSeconds",
		},
		{
			name:    "an alert's value set to null",
			args:    []string{"-f", "ci/everything-values.yaml", "--set", "prometheusRule.errorRatio.minRequestsPerSecond=null"},
			wantErr: "minRequestsPerSecond",
		},
		{
			name:    "an HPA whose minimum exceeds its maximum",
			args:    []string{"--set", "autoscaling.enabled=true,autoscaling.minReplicas=5,autoscaling.maxReplicas=3"},
			wantErr: "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
		},
		{
			name:    "an image digest that is not one",
			args:    []string{"--set", "image.digest=latest"},
			wantErr: "/image/digest",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := render(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("helm template %v: error %v, want one containing %q", tc.args, err, tc.wantErr)
			}
		})
	}
}

// TestAccepted: the other ways the values are meant to be used render.
func TestAccepted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
	}{
		{name: "DATABASE_URL as a plain value, for development", args: []string{"--set", "database.url=postgresql://users:dev@users-db:5432/users"}},
		{name: "DATABASE_URL in env, as the platform's other charts take it", args: []string{"--set", "env[0].name=DATABASE_URL,env[0].value=postgresql://users:x@users-db:5432/users"}},
		{name: "no migrations", args: []string{"--set", "migrations.enabled=false"}},
		{name: "an existing ServiceAccount", args: []string{"--set", "serviceAccount.create=false,serviceAccount.name=users"}},
		{name: "HTTP probes without TLS", args: []string{"--set", "probes.via=http"}},
		{name: "a PDB by percentage", args: []string{"--set", "podDisruptionBudget.maxUnavailable=50%"}},
		{name: "as a subchart, with global values", args: []string{"--set", "global.imageRegistry=example.com"}},
		{name: "alerts on series scraped some other way", args: []string{"--set", "prometheusRule.enabled=true", "--set-string", `prometheusRule.selector=job="users"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_ = decode(t, tc.args...)
		})
	}
}
