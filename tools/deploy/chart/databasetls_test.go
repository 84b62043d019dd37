package chart

import (
	"path"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// databaseCA is what database.tls.caSecret gives one pod: the CA file the
// binary is told to read (PGSSLROOTCERT) as the Secret and key it comes
// from, and the sslmode it is told to use.
type databaseCA struct {
	SSLMode   string
	Secret    string
	Key       string
	MountedRO bool
}

// podDatabaseCA follows PGSSLROOTCERT of container name to the volume
// mounted over it and the Secret's key that volume puts there; zero
// without PGSSLROOTCERT. A file that no mount provides fails the test.
func podDatabaseCA(t *testing.T, spec corev1.PodSpec, name string) databaseCA {
	t.Helper()
	c := container(t, spec, name)
	mode, _ := envVar(c, "PGSSLMODE")
	root, ok := envVar(c, "PGSSLROOTCERT")
	if !ok {
		return databaseCA{SSLMode: mode.Value}
	}
	for _, m := range c.VolumeMounts {
		rel, found := strings.CutPrefix(root.Value, m.MountPath+"/")
		if !found {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			for _, item := range v.Secret.Items {
				if path.Clean(item.Path) == rel {
					return databaseCA{SSLMode: mode.Value, Secret: v.Secret.SecretName, Key: item.Key, MountedRO: m.ReadOnly}
				}
			}
		}
	}
	t.Fatalf("container %s: PGSSLROOTCERT=%s, which no Secret volume mounted in it provides", name, root.Value)
	return databaseCA{}
}

// TestDatabaseCA: database.tls.caSecret reaches the service's pods and
// the migration Job alike as a read-only file from the Secret's key,
// which PGSSLROOTCERT names, with PGSSLMODE verify-full, without which
// pgx's default (prefer) would ignore the CA. Without it, neither is set
// and nothing is mounted.
func TestDatabaseCA(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want databaseCA
	}{
		{name: "default values"},
		{
			name: "CloudNativePG's CA Secret",
			args: []string{"--set", "database.tls.caSecret.name=users-db-ca"},
			want: databaseCA{SSLMode: "verify-full", Secret: "users-db-ca", Key: "ca.crt", MountedRO: true},
		},
		{
			name: "another key, beside the gRPC TLS Secret",
			args: []string{"-f", "ci/everything-values.yaml", "--set", "database.tls.caSecret.name=pg-ca,database.tls.caSecret.key=root.pem"},
			want: databaseCA{SSLMode: "verify-full", Secret: "pg-ca", Key: "root.pem", MountedRO: true},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			objs := decode(t, tc.args...)
			pods := map[string]corev1.PodSpec{
				"users":   find[*appsv1.Deployment](t, objs).Spec.Template.Spec,
				"migrate": find[*batchv1.Job](t, objs).Spec.Template.Spec,
			}
			for name, spec := range pods {
				if diff := cmp.Diff(tc.want, podDatabaseCA(t, spec, name)); diff != "" {
					t.Errorf("container %s: database CA (-want +got):\n%s", name, diff)
				}
				if tc.want.Secret == "" {
					for _, v := range spec.Volumes {
						if v.Name == "database-ca" {
							t.Errorf("container %s: a database-ca volume without database.tls.caSecret", name)
						}
					}
				}
			}
		})
	}
}

// TestDatabaseCARefusesTheSameVariablesInEnv: with database.tls.caSecret
// the chart sets PGSSLMODE and PGSSLROOTCERT; an env entry of either
// would set it twice.
func TestDatabaseCARefusesTheSameVariablesInEnv(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"PGSSLMODE", "PGSSLROOTCERT"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := render(t, "--set", "database.tls.caSecret.name=users-db-ca,env[0].name="+name+",env[0].value=x")
			want := "env sets " + name + ", which the chart sets from database.tls.caSecret; keep one"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("helm template: %v, want an error containing %q", err, want)
			}
			// Without the CA Secret, env may set either.
			_ = decode(t, "--set", "env[0].name="+name+",env[0].value=x")
		})
	}
}
