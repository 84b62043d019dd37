package chart

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// databaseEnv returns c's DATABASE_URL and DB_SERVE_ROLE entries, each as
// often as it is set.
func databaseEnv(c corev1.Container) []corev1.EnvVar {
	var got []corev1.EnvVar
	for _, name := range []string{"DATABASE_URL", "DB_SERVE_ROLE"} {
		for _, e := range c.Env {
			if e.Name == name {
				got = append(got, e)
			}
		}
	}
	return got
}

// TestDatabaseRoles: with the owner role's Secret for the migrations and
// the serve role's for the pods, the migration Job connects with the
// first and grants the serve role (DB_SERVE_ROLE); the Deployment
// connects with the second and grants nothing. A DB_SERVE_ROLE in env
// gives way to migrations.serveRole on the Job.
func TestDatabaseRoles(t *testing.T) {
	t.Parallel()
	roles := []string{
		"--set", "database.existingSecret.name=users-db-serve",
		"--set", "database.existingSecret.key=url",
		"--set", "migrations.existingSecret.name=users-db-owner",
		"--set", "migrations.existingSecret.key=url",
		"--set", "migrations.serveRole=users_serve",
	}
	jobWant := []corev1.EnvVar{
		{Name: "DATABASE_URL", ValueFrom: fromSecret("users-db-owner", "url")},
		{Name: "DB_SERVE_ROLE", Value: "users_serve"},
	}
	for _, tc := range []struct {
		name       string
		args       []string
		deployment []corev1.EnvVar
	}{
		{
			name:       "both Secrets and the serve role",
			args:       roles,
			deployment: []corev1.EnvVar{{Name: "DATABASE_URL", ValueFrom: fromSecret("users-db-serve", "url")}},
		},
		{
			name: "a DB_SERVE_ROLE in env as well",
			args: append(roles[:len(roles):len(roles)], "--set", "env[0].name=DB_SERVE_ROLE", "--set", "env[0].value=someone_else"),
			// env reaches the pods as it is; serve reads no DB_SERVE_ROLE.
			deployment: []corev1.EnvVar{
				{Name: "DATABASE_URL", ValueFrom: fromSecret("users-db-serve", "url")},
				{Name: "DB_SERVE_ROLE", Value: "someone_else"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			objs := decode(t, tc.args...)
			job := container(t, find[*batchv1.Job](t, objs).Spec.Template.Spec, "migrate")
			if diff := cmp.Diff(jobWant, databaseEnv(job)); diff != "" {
				t.Errorf("migration Job's DATABASE_URL and DB_SERVE_ROLE (-want +got):\n%s", diff)
			}
			pod := container(t, find[*appsv1.Deployment](t, objs).Spec.Template.Spec, "users")
			if diff := cmp.Diff(tc.deployment, databaseEnv(pod)); diff != "" {
				t.Errorf("Deployment's DATABASE_URL and DB_SERVE_ROLE (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNoServeRoleByDefault: without migrations.serveRole the Job sets no
// DB_SERVE_ROLE, and "users migrate up" grants nothing.
func TestNoServeRoleByDefault(t *testing.T) {
	t.Parallel()
	job := container(t, find[*batchv1.Job](t, decode(t)).Spec.Template.Spec, "migrate")
	if e, ok := envVar(job, "DB_SERVE_ROLE"); ok {
		t.Errorf("migration Job has %+v by default, want no DB_SERVE_ROLE", e)
	}
}
