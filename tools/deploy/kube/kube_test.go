package kube

import (
	"strings"
	"testing"
)

// restrictedPod passes the restricted Pod Security Standard; the cases
// below break it one way at a time.
const restrictedPod = `
apiVersion: v1
kind: Pod
metadata:
  name: ok
spec:
  securityContext:
    runAsNonRoot: true
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: app
      image: example.com/app:1.0.0
      securityContext:
        allowPrivilegeEscalation: false
        capabilities:
          drop: [ALL]
`

func TestDecodeAcceptsValidDocuments(t *testing.T) {
	t.Parallel()
	objs, err := Decode([]byte("# a comment-only document\n---\n" + restrictedPod + `---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: sm
spec:
  selector: {}
  endpoints:
    - port: admin
      path: /metrics
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.String())
	}
	if strings.Join(got, " ") != "Pod/ok ServiceMonitor/sm" {
		t.Errorf("decoded %v, want [Pod/ok ServiceMonitor/sm]", got)
	}
}

// The checker must be able to fail: each of these is a mistake that
// kubectl apply --validate=strict would refuse.
func TestDecodeRefusesMistakes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, doc, wantErr string
	}{
		{
			name:    "a misspelt field",
			doc:     strings.Replace(restrictedPod, "image:", "imagee:", 1),
			wantErr: `unknown field "spec.containers[0].imagee"`,
		},
		{
			name:    "a field in the wrong case",
			doc:     strings.Replace(restrictedPod, "runAsNonRoot", "runasnonroot", 1),
			wantErr: `unknown field "spec.securityContext.runasnonroot"`,
		},
		{
			name:    "a field at the wrong level",
			doc:     restrictedPod + "  image: misplaced\n",
			wantErr: `unknown field "spec.image"`,
		},
		{
			name:    "a duplicated key",
			doc:     strings.Replace(restrictedPod, "  name: ok\n", "  name: ok\n  name: again\n", 1),
			wantErr: `key "name" already set`,
		},
		{
			name:    "a wrong type",
			doc:     strings.Replace(restrictedPod, "runAsNonRoot: true", `runAsNonRoot: "yes"`, 1),
			wantErr: "cannot unmarshal",
		},
		{
			name:    "a kind that does not exist",
			doc:     "apiVersion: apps/v1\nkind: Deploymnet\nmetadata:\n  name: x\n",
			wantErr: "unknown kind",
		},
		{
			name:    "a ServiceMonitor with a misspelt endpoint field",
			doc:     "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: sm\nspec:\n  selector: {}\n  endpoints:\n    - port: admin\n      pth: /metrics\n",
			wantErr: `unknown field "spec.endpoints[0].pth"`,
		},
		{
			name:    "a Certificate with a misspelt field",
			doc:     "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata:\n  name: c\nspec:\n  secretName: s\n  dnsName: [a]\n",
			wantErr: `unknown field "spec.dnsName"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Decode([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Decode: error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestRestricted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		edit    func(string) string
		wantErr string // "" for admitted
	}{
		{name: "the restricted pod is admitted", edit: func(s string) string { return s }},
		{
			name:    "a privileged container is refused",
			edit:    func(s string) string { return s + "        privileged: true\n" },
			wantErr: "privileged",
		},
		{
			name:    "a pod that may run as root is refused",
			edit:    func(s string) string { return strings.Replace(s, "runAsNonRoot: true", "runAsNonRoot: false", 1) },
			wantErr: "runAsNonRoot",
		},
		{
			name:    "capabilities left in place are refused",
			edit:    func(s string) string { return strings.Replace(s, "drop: [ALL]", "drop: []", 1) },
			wantErr: "capabilities",
		},
		{
			name: "no seccomp profile is refused",
			edit: func(s string) string {
				return strings.Replace(s, "    seccompProfile:\n      type: RuntimeDefault\n", "", 1)
			},
			wantErr: "seccompProfile",
		},
		{
			name:    "a hostPath volume is refused",
			edit:    func(s string) string { return s + "  volumes:\n    - name: host\n      hostPath:\n        path: /\n" },
			wantErr: "hostPath",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			objs, err := Decode([]byte(tc.edit(restrictedPod)))
			if err != nil {
				t.Fatal(err)
			}
			meta, spec, ok := PodTemplate(objs[0].Object)
			if !ok {
				t.Fatal("PodTemplate: not a pod")
			}
			err = Restricted(meta, spec)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Restricted: %v, want admitted", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Restricted: %v, want an error naming %q", err, tc.wantErr)
			}
		})
	}
}
