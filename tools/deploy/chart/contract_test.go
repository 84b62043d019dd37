package chart

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/agynio/users/tools/deploy/kube"
)

// find returns the one object of type T among objs.
func find[T any](t *testing.T, objs []kube.Object) T {
	t.Helper()
	var found []T
	for _, o := range objs {
		if v, ok := o.Object.(T); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("found %d objects of type %T, want 1", len(found), zero)
	}
	return found[0]
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

func envVar(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// TestDefaultDeployment pins what the service needs from its Deployment
// with the default values: native gRPC probes (readiness on the server,
// liveness on "liveness", which never follows the database), a grace
// period longer than the drain, the hardening, and DATABASE_URL from a
// Secret.
func TestDefaultDeployment(t *testing.T) {
	t.Parallel()
	objs := decode(t)
	d := find[*appsv1.Deployment](t, objs)
	spec := d.Spec.Template.Spec
	c := container(t, spec, "users")

	wantReadiness := &corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 50051}}
	if diff := cmp.Diff(wantReadiness, &c.ReadinessProbe.ProbeHandler); diff != "" {
		t.Errorf("readiness probe (-want +got):\n%s", diff)
	}
	liveness := "liveness"
	wantLiveness := &corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 50051, Service: &liveness}}
	if diff := cmp.Diff(wantLiveness, &c.LivenessProbe.ProbeHandler); diff != "" {
		t.Errorf("liveness probe (-want +got):\n%s", diff)
	}

	checkGracePeriod(t, spec, c)
	checkHardening(t, spec, c)

	db, ok := envVar(c, "DATABASE_URL")
	if !ok || db.ValueFrom == nil || db.ValueFrom.SecretKeyRef == nil || db.Value != "" {
		t.Errorf("DATABASE_URL = %+v, want it from a Secret", db)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources = %+v, want CPU and memory requests and a memory limit", c.Resources)
	}
	for _, want := range []string{"grpc", "admin"} {
		if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == want }) {
			t.Errorf("no container port named %q", want)
		}
	}
}

// TestMigrationJob: "users migrate up" with the service's image and
// database, as a hook that runs before install and before every upgrade.
func TestMigrationJob(t *testing.T) {
	t.Parallel()
	objs := decode(t)
	job := find[*batchv1.Job](t, objs)
	d := find[*appsv1.Deployment](t, objs)
	if got := job.Annotations["helm.sh/hook"]; got != "pre-install,pre-upgrade" {
		t.Errorf("helm.sh/hook = %q, want pre-install,pre-upgrade", got)
	}
	spec := job.Spec.Template.Spec
	c := container(t, spec, "migrate")
	server := container(t, d.Spec.Template.Spec, "users")
	if c.Image != server.Image {
		t.Errorf("migration image %q, want the service's %q", c.Image, server.Image)
	}
	if diff := cmp.Diff([]string{"migrate", "up"}, c.Args); diff != "" {
		t.Errorf("migration args (-want +got):\n%s", diff)
	}
	jobDB, _ := envVar(c, "DATABASE_URL")
	serverDB, _ := envVar(server, "DATABASE_URL")
	if diff := cmp.Diff(serverDB, jobDB); diff != "" {
		t.Errorf("migration DATABASE_URL differs from the service's (-service +job):\n%s", diff)
	}
	if spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy %q, want Never (the Job's backoffLimit retries)", spec.RestartPolicy)
	}
	checkHardening(t, spec, c)
}

// TestEverythingEnabled pins what the optional values switch: TLS with
// HTTP probes, the ServiceMonitor on the admin port, the HPA owning the
// replica count, and a migration Secret of its own.
func TestEverythingEnabled(t *testing.T) {
	t.Parallel()
	objs := decode(t, "-f", "ci/everything-values.yaml")
	d := find[*appsv1.Deployment](t, objs)
	spec := d.Spec.Template.Spec
	c := container(t, spec, "users")

	for probe, want := range map[string]struct {
		got  *corev1.Probe
		path string
	}{"readiness": {c.ReadinessProbe, "/readyz"}, "liveness": {c.LivenessProbe, "/healthz"}} {
		h := want.got.HTTPGet
		if want.got.GRPC != nil || h == nil || h.Path != want.path || h.Port.String() != "admin" {
			t.Errorf("%s probe = %+v, want GET %s on port admin", probe, want.got.ProbeHandler, want.path)
		}
	}
	for name, want := range map[string]string{
		"GRPC_TLS_CERT_FILE":      "/etc/users/tls/tls.crt",
		"GRPC_TLS_KEY_FILE":       "/etc/users/tls/tls.key",
		"GRPC_TLS_CLIENT_CA_FILE": "/etc/users/tls/ca.crt",
		"LOG_LEVEL":               "debug",
	} {
		if e, _ := envVar(c, name); e.Value != want {
			t.Errorf("%s = %q, want %q", name, e.Value, want)
		}
	}
	if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool {
		return v.Secret != nil && v.Secret.SecretName == "users-grpc-tls"
	}) {
		t.Errorf("no volume from the TLS Secret users-grpc-tls")
	}
	if d.Spec.Replicas != nil {
		t.Errorf("replicas = %d with autoscaling enabled, want it left to the HPA", *d.Spec.Replicas)
	}
	checkGracePeriod(t, spec, c)
	checkHardening(t, spec, c)

	job := find[*batchv1.Job](t, objs)
	jc := container(t, job.Spec.Template.Spec, "migrate")
	db, _ := envVar(jc, "DATABASE_URL")
	if db.ValueFrom == nil || db.ValueFrom.SecretKeyRef == nil || db.ValueFrom.SecretKeyRef.Name != "users-database-owner" {
		t.Errorf("migration DATABASE_URL = %+v, want it from migrations.existingSecret users-database-owner", db)
	}
	if _, tls := envVar(jc, "GRPC_TLS_CERT_FILE"); tls {
		t.Errorf("the migration Job has GRPC_TLS_CERT_FILE, but no TLS volume to read it from")
	}
}

// checkGracePeriod: the kubelet must not kill the pod before the service
// has gone through the preStop hook, accepted calls for DRAIN_DELAY and
// drained for SHUTDOWN_TIMEOUT.
func checkGracePeriod(t *testing.T, spec corev1.PodSpec, c corev1.Container) {
	t.Helper()
	var drain time.Duration
	for _, name := range []string{"DRAIN_DELAY", "SHUTDOWN_TIMEOUT"} {
		e, ok := envVar(c, name)
		if !ok {
			t.Fatalf("no %s", name)
		}
		d, err := time.ParseDuration(e.Value)
		if err != nil {
			t.Fatalf("%s %q: %v", name, e.Value, err)
		}
		drain += d
	}
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		drain += time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	if grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second; grace <= drain {
		t.Errorf("terminationGracePeriodSeconds %s, want more than preStop plus DRAIN_DELAY plus SHUTDOWN_TIMEOUT (%s)", grace, drain)
	}
}

// checkHardening asks what the restricted standard does not: a read-only
// root file system, no service account token, and a user set by number
// (restricted only forbids 0 where one is set). Capabilities, runAsNonRoot
// and seccomp are the standard's own checks, which TestPodsAreRestricted
// runs with the admission plugin's code. (kube-linter has the checks
// below, but the Go module proxy does not serve it.)
func checkHardening(t *testing.T, spec corev1.PodSpec, c corev1.Container) {
	t.Helper()
	var problems []string
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		problems = append(problems, "root file system not read-only")
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		problems = append(problems, "service account token mounted")
	}
	if psc := spec.SecurityContext; psc == nil || psc.RunAsUser == nil {
		problems = append(problems, "no numeric user")
	}
	if len(problems) > 0 {
		t.Errorf("container %s: %s", c.Name, strings.Join(problems, "; "))
	}
}

// TestEnvNamesAreUnique: a name set twice is resolved silently by the
// kubelet (the last wins); the chart must never render one.
func TestEnvNamesAreUnique(t *testing.T) {
	t.Parallel()
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			for _, o := range decode(t, vs.args...) {
				_, spec, ok := kube.PodTemplate(o.Object)
				if !ok {
					continue
				}
				for _, c := range spec.Containers {
					seen := map[string]bool{}
					for _, e := range c.Env {
						if seen[e.Name] {
							t.Errorf("%s container %s: %s set twice", o, c.Name, e.Name)
						}
						seen[e.Name] = true
					}
				}
			}
		})
	}
}
