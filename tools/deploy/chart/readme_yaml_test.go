package chart

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/agynio/users/tools/deploy/kube"
)

// TestReadmeYAML: every ```yaml block of the README is either a
// Kubernetes object or chart values, and the values render. The TLS
// example is the one the README promises is one value away: its values
// turn on mutual TLS with HTTP probes, from the Secret its cert-manager
// Certificate writes, for the names the client Service answers to. The
// events example relays them with NATS_URL from the Secret, and the key,
// that the README's kubectl command creates.
func TestReadmeYAML(t *testing.T) {
	t.Parallel()
	var certs []*certmanagerv1.Certificate
	var tlsValues, eventsValues int
	doc := readme(t)
	for i, b := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(doc, -1) {
		src := []byte(b[1])
		var head struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(src, &head); err != nil {
			t.Fatalf("yaml block %d: %v", i+1, err)
		}
		if head.Kind != "" {
			objs, err := kube.Decode(src)
			if err != nil {
				t.Errorf("yaml block %d: %v", i+1, err)
			}
			for _, o := range objs {
				if c, ok := o.Object.(*certmanagerv1.Certificate); ok {
					certs = append(certs, c)
				}
			}
			continue
		}

		file := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(file, src, 0o600); err != nil {
			t.Fatal(err)
		}
		objs := decode(t, "-f", file)
		var v struct {
			TLS struct {
				Enabled    bool   `json:"enabled"`
				SecretName string `json:"secretName"`
				ClientAuth bool   `json:"clientAuth"`
			} `json:"tls"`
			Events struct {
				NATS struct {
					ExistingSecret struct {
						Name string `json:"name"`
					} `json:"existingSecret"`
				} `json:"nats"`
			} `json:"events"`
		}
		if err := yaml.Unmarshal(src, &v); err != nil {
			t.Fatal(err)
		}
		if secret := v.Events.NATS.ExistingSecret.Name; secret != "" {
			eventsValues++
			c := container(t, find[*appsv1.Deployment](t, objs).Spec.Template.Spec, "users")
			url, _ := envVar(c, "NATS_URL")
			if url.ValueFrom == nil || url.ValueFrom.SecretKeyRef == nil || url.ValueFrom.SecretKeyRef.Name != secret {
				t.Errorf("yaml block %d: NATS_URL = %+v, want it from the Secret %s", i+1, url, secret)
			} else {
				key := url.ValueFrom.SecretKeyRef.Key
				created := regexp.MustCompile(`create secret generic ` + regexp.QuoteMeta(secret) + ` \\\n\s*--from-literal=` + regexp.QuoteMeta(key) + `=`)
				if !created.MatchString(doc) {
					t.Errorf("yaml block %d: NATS_URL from key %s of the Secret %s, which no kubectl command of the README creates", i+1, key, secret)
				}
			}
			if _, ok := envVar(c, "NATS_STREAM"); !ok {
				t.Errorf("yaml block %d: events relayed without NATS_STREAM", i+1)
			}
		}
		if !v.TLS.Enabled {
			continue
		}
		tlsValues++
		if !v.TLS.ClientAuth {
			t.Errorf("yaml block %d: the TLS example does not show mutual TLS (tls.clientAuth)", i+1)
		}
		d := find[*appsv1.Deployment](t, objs)
		c := container(t, d.Spec.Template.Spec, "users")
		for _, name := range []string{"GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "GRPC_TLS_CLIENT_CA_FILE"} {
			if _, ok := envVar(c, name); !ok {
				t.Errorf("yaml block %d: no %s", i+1, name)
			}
		}
		if c.ReadinessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet == nil {
			t.Errorf("yaml block %d: TLS with probes other than HTTP", i+1)
		}
		for _, cert := range certs {
			if cert.Spec.SecretName != v.TLS.SecretName {
				t.Errorf("yaml block %d: tls.secretName %q, but the Certificate writes %q", i+1, v.TLS.SecretName, cert.Spec.SecretName)
			}
			svc := named[*corev1.Service](t, objs, "users")
			for _, dns := range []string{svc.Name, svc.Name + ".platform.svc"} {
				if !slices.Contains(cert.Spec.DNSNames, dns) {
					t.Errorf("the Certificate's dnsNames %v lack %s, which clients call", cert.Spec.DNSNames, dns)
				}
			}
			if !slices.Contains(cert.Spec.Usages, certmanagerv1.UsageServerAuth) {
				t.Errorf("the Certificate's usages %v lack server auth", cert.Spec.Usages)
			}
		}
	}
	if len(certs) != 1 || tlsValues != 1 {
		t.Errorf("README has %d Certificate and %d TLS values examples, want one each, the Certificate first", len(certs), tlsValues)
	}
	if eventsValues != 1 {
		t.Errorf("README has %d values examples relaying events from a Secret, want one", eventsValues)
	}
}
