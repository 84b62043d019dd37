package chart

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// eventsVars are the variables the binary reads for its change events.
var eventsVars = []string{"NATS_URL", "NATS_CREDS_FILE", "NATS_STREAM", "NATS_STREAM_MAX_AGE", "OUTBOX_RETENTION"}

// eventsEnv returns the entries of c's environment that name one of
// eventsVars, by name.
func eventsEnv(c corev1.Container) map[string]corev1.EnvVar {
	got := map[string]corev1.EnvVar{}
	for _, n := range eventsVars {
		if e, ok := envVar(c, n); ok {
			got[n] = e
		}
	}
	return got
}

func fromSecret(name, key string) *corev1.EnvVarSource {
	return &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: name},
		Key:                  key,
	}}
}

// TestEventsEnvironment: events.nats turns the relay on through NATS_URL,
// from a plain value or a Secret, and only then does the chart set the
// stream's variables, which nothing but the relay reads; with neither,
// nothing sets NATS_URL and the outbox is pruned after OUTBOX_RETENTION.
func TestEventsEnvironment(t *testing.T) {
	t.Parallel()
	pruned := func(retention string) map[string]corev1.EnvVar {
		return map[string]corev1.EnvVar{"OUTBOX_RETENTION": {Name: "OUTBOX_RETENTION", Value: retention}}
	}
	relayed := func(url corev1.EnvVar, stream, maxAge, retention string) map[string]corev1.EnvVar {
		url.Name = "NATS_URL"
		return map[string]corev1.EnvVar{
			"NATS_URL":            url,
			"NATS_STREAM":         {Name: "NATS_STREAM", Value: stream},
			"NATS_STREAM_MAX_AGE": {Name: "NATS_STREAM_MAX_AGE", Value: maxAge},
			"OUTBOX_RETENTION":    {Name: "OUTBOX_RETENTION", Value: retention},
		}
	}
	for _, tc := range []struct {
		name string
		args []string
		want map[string]corev1.EnvVar
	}{
		{
			name: "no NATS by default: the outbox is pruned",
			want: pruned("24h"),
		},
		{
			name: "the stream's settings alone do not turn the relay on",
			args: []string{"--set", "events.stream=PLATFORM,events.streamMaxAge=1h,events.outboxRetention=2h"},
			want: pruned("2h"),
		},
		{
			name: "a plain URL turns the relay on, with the default stream",
			args: []string{"--set", "events.nats.url=nats://nats.nats:4222"},
			want: relayed(corev1.EnvVar{Value: "nats://nats.nats:4222"}, "USERS", "168h", "24h"),
		},
		{
			name: "a Secret turns the relay on, its key NATS_URL by default",
			args: []string{"--set", "events.nats.existingSecret.name=users-nats"},
			want: relayed(corev1.EnvVar{ValueFrom: fromSecret("users-nats", "NATS_URL")}, "USERS", "168h", "24h"),
		},
		{
			name: "a NATS_URL in env turns the relay on, as DATABASE_URL in env does",
			args: []string{"--set", "env[0].name=NATS_URL,env[0].value=nats://nats.nats:4222"},
			want: relayed(corev1.EnvVar{Value: "nats://nats.nats:4222"}, "USERS", "168h", "24h"),
		},
		{
			name: "the stream's settings with the relay on",
			args: []string{"--set", "events.nats.url=nats://nats.nats:4222,events.stream=PLATFORM,events.streamMaxAge=1h30m,events.outboxRetention=2h"},
			want: relayed(corev1.EnvVar{Value: "nats://nats.nats:4222"}, "PLATFORM", "1h30m", "2h"),
		},
		{
			name: "everything enabled",
			args: []string{"-f", "ci/everything-values.yaml"},
			want: relayed(corev1.EnvVar{ValueFrom: fromSecret("users-nats", "url")}, "PLATFORM_USERS", "72h", "12h"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := container(t, find[*appsv1.Deployment](t, decode(t, tc.args...)).Spec.Template.Spec, "users")
			if diff := cmp.Diff(tc.want, eventsEnv(c)); diff != "" {
				t.Errorf("the events' environment (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMigrationJobHasNoNATS: the migration Job publishes nothing, so it
// gets no NATS variable from env, where the README tells NATS_CREDS_FILE
// to go: a NATS_URL may carry a password, and NATS_CREDS_FILE without
// NATS_URL (which events.nats gives the Deployment alone) is a
// configuration error that would stop "users migrate" and so the release.
// The Job's other env entries are kept.
func TestMigrationJobHasNoNATS(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
	}{
		{
			name: "the URL from a Secret, a credentials file in env",
			args: []string{"--set", "events.nats.existingSecret.name=users-nats,env[0].name=NATS_CREDS_FILE,env[0].value=/etc/nats/users.creds,env[1].name=LOG_LEVEL,env[1].value=debug"},
		},
		{
			name: "both in env",
			args: []string{"--set", "env[0].name=NATS_URL,env[0].value=nats://users:x@nats:4222,env[1].name=NATS_CREDS_FILE,env[1].value=/etc/nats/users.creds,env[2].name=LOG_LEVEL,env[2].value=debug"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			objs := decode(t, tc.args...)
			server := container(t, find[*appsv1.Deployment](t, objs).Spec.Template.Spec, "users")
			for _, n := range []string{"NATS_URL", "NATS_CREDS_FILE"} {
				if _, ok := envVar(server, n); !ok {
					t.Errorf("the service has no %s", n)
				}
			}
			job := container(t, find[*batchv1.Job](t, objs).Spec.Template.Spec, "migrate")
			for _, e := range job.Env {
				if strings.HasPrefix(e.Name, "NATS_") {
					t.Errorf("the migration Job has %s", e.Name)
				}
			}
			if e, _ := envVar(job, "LOG_LEVEL"); e.Value != "debug" {
				t.Errorf("the migration Job's LOG_LEVEL = %q, want env's debug", e.Value)
			}
		})
	}
}

// setJSON returns the helm arguments that set key to value as it is,
// without --set's own parsing of commas, backslashes and spaces.
func setJSON(t *testing.T, key, value string) []string {
	t.Helper()
	b, err := json.Marshal(value)
	if err != nil {
		t.Fatal(err)
	}
	return []string{"--set-json", key + "=" + string(b)}
}

// TestEventsDurationsAsTheBinaryReadsThem: the schema takes for
// events.streamMaxAge and events.outboxRetention what the binary takes, a
// positive Go duration (time.ParseDuration), and refuses the rest at
// render rather than letting every pod exit at start-up.
func TestEventsDurationsAsTheBinaryReadsThem(t *testing.T) {
	t.Parallel()
	for _, value := range []string{
		"24h", "168h", "1h30m", "1.5h", ".5h", "2.h", "+1h", "90s", "500ms", "750us", "750µs", "750μs", "1h0m0.5s",
		"0s", "0.0h", "0", "24", "7d", "1H", "-1h", " 24h", "24h ", "h", ".h", "1.2.3h", "",
	} {
		d, parseErr := time.ParseDuration(value)
		want := parseErr == nil && d > 0
		for _, key := range []string{"events.streamMaxAge", "events.outboxRetention"} {
			t.Run(key+"="+value, func(t *testing.T) {
				t.Parallel()
				_, err := render(t, setJSON(t, key, value)...)
				if got := err == nil; got != want {
					t.Errorf("%s=%q: rendered %t, want %t as the binary reads it (time.ParseDuration: %v, %v); helm: %v", key, value, got, want, d, parseErr, err)
				}
			})
		}
	}
}

// TestEventsStreamNames: the schema refuses the stream names the binary
// refuses at start-up by JetStream's rule, as internal/config applies it
// (a package this module cannot import): no whitespace, '.', '*', '>',
// '/' or '\'. An empty name, which the binary would read as USERS, is
// refused as well: the default is in values.yaml.
func TestEventsStreamNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"USERS", true},
		{"PLATFORM_USERS", true},
		{"users-events-2", true},
		{"", false},
		{"agyn.users", false},
		{"USERS*", false},
		{"USERS>", false},
		{"a/b", false},
		{`a\b`, false},
		{"two words", false},
		{"tab\tbed", false},
		{"USERS\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := render(t, setJSON(t, "events.stream", tc.name)...)
			if got := err == nil; got != tc.want {
				t.Errorf("events.stream=%q: rendered %t, want %t; helm: %v", tc.name, got, tc.want, err)
			}
		})
	}
}
