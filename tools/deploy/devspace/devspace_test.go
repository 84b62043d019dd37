package devspace

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/agynio/users/tools/deploy/dockerfile"
	"github.com/agynio/users/tools/deploy/internal/repo"
	"github.com/agynio/users/tools/deploy/kube"
)

func load(t *testing.T) config {
	t.Helper()
	src, err := os.ReadFile(repo.Path(t, "devspace.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// DevSpace reads YAML case-sensitively and refuses duplicate keys.
	js, err := yaml.YAMLToJSONStrict(src)
	if err != nil {
		t.Fatalf("devspace.yaml: %v", err)
	}
	var c config
	strict, err := kjson.UnmarshalStrict(js, &c)
	if err == nil {
		err = errors.Join(strict...)
	}
	if err != nil {
		t.Fatalf("devspace.yaml: %v", err)
	}
	if c.Version != "v2beta1" || c.Name == "" {
		t.Fatalf("devspace.yaml: version %q name %q, want v2beta1 and a name", c.Version, c.Name)
	}
	return c
}

// exists fails the test unless the repository has path (relative to its
// root, where DevSpace runs).
func exists(t *testing.T, what, path string) string {
	t.Helper()
	full := repo.Path(t, filepath.FromSlash(path))
	if _, err := os.Stat(full); err != nil {
		t.Errorf("%s: %v", what, err)
	}
	return full
}

func TestImages(t *testing.T) {
	t.Parallel()
	for name, img := range load(t).Images {
		src, err := os.ReadFile(exists(t, "images."+name+".dockerfile", img.Dockerfile))
		if err != nil {
			continue
		}
		exists(t, "images."+name+".context", img.Context)
		if img.Target == "" {
			continue
		}
		f, err := dockerfile.Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(f.Stages, func(s instructions.Stage) bool { return s.Name == img.Target }) {
			t.Errorf("images.%s.target %q: no such stage in %s", name, img.Target, img.Dockerfile)
		}
	}
}

// TestManifests: what DevSpace applies with kubectl decodes strictly and
// passes the restricted Pod Security Standard, like the chart.
func TestManifests(t *testing.T) {
	t.Parallel()
	c := load(t)
	for name, d := range c.Deployments {
		if d.Kubectl == nil {
			continue
		}
		for _, m := range d.Kubectl.Manifests {
			src, err := os.ReadFile(exists(t, "deployments."+name+".kubectl.manifests", m))
			if err != nil {
				continue
			}
			objs, err := kube.Decode(src)
			if err != nil {
				t.Errorf("%s:\n%v", m, err)
			}
			for _, o := range objs {
				if meta, spec, ok := kube.PodTemplate(o.Object); ok {
					if err := kube.Restricted(meta, spec); err != nil {
						t.Errorf("%s: %s: %v", m, o, err)
					}
				}
			}
		}
	}
}

// renderChart renders the chart deployment the way DevSpace installs it,
// with the image DevSpace would have built in place of its runtime
// variables.
func renderChart(t *testing.T, c config) []kube.Object {
	t.Helper()
	d, ok := c.Deployments["users"]
	if !ok || d.Helm == nil {
		t.Fatal("no helm deployment named users")
	}
	if filepath.Clean(d.Helm.Chart.Name) != filepath.Join("helm", "users") {
		t.Fatalf("deployments.users.helm.chart.name %q, want ./helm/users", d.Helm.Chart.Name)
	}
	var args []string
	for _, f := range d.Helm.ValuesFiles {
		args = append(args, "-f", exists(t, "deployments.users.helm.valuesFiles", f))
	}
	args = append(args, "--set", "image.repository=example.com/users,image.tag=dev")
	out, err := repo.Template(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kube.Decode([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// TestDevSelectsTheChartsPod: dev.users replaces the pod the chart runs,
// and patches fields that pod has.
func TestDevSelectsTheChartsPod(t *testing.T) {
	t.Parallel()
	c := load(t)
	dev, ok := c.Dev["users"]
	if !ok {
		t.Fatal("no dev.users")
	}
	var deploy *appsv1.Deployment
	for _, o := range renderChart(t, c) {
		if d, ok := o.Object.(*appsv1.Deployment); ok {
			deploy = d
		}
	}
	if deploy == nil {
		t.Fatal("the chart rendered no Deployment")
	}
	if !labels.SelectorFromSet(dev.LabelSelector).Matches(labels.Set(deploy.Spec.Template.Labels)) {
		t.Errorf("dev.users.labelSelector %v does not select the chart's pod %v", dev.LabelSelector, deploy.Spec.Template.Labels)
	}
	var names []string
	for _, ct := range deploy.Spec.Template.Spec.Containers {
		names = append(names, ct.Name)
	}
	if !slices.Contains(names, dev.Container) {
		t.Errorf("dev.users.container %q, want one of %v", dev.Container, names)
	}
	ct := deploy.Spec.Template.Spec.Containers[slices.Index(names, dev.Container)]
	has := map[string]bool{
		"livenessProbe":                          ct.LivenessProbe != nil,
		"readinessProbe":                         ct.ReadinessProbe != nil,
		"securityContext.readOnlyRootFilesystem": ct.SecurityContext != nil && ct.SecurityContext.ReadOnlyRootFilesystem != nil,
	}
	prefix := "spec.containers.name=" + dev.Container + "."
	for _, p := range dev.Patches {
		field, ok := strings.CutPrefix(p.Path, prefix)
		if !ok || !has[field] {
			t.Errorf("dev.users patch %s %s: not a field the chart's container %s has", p.Op, p.Path, dev.Container)
		}
	}
	for _, s := range dev.Sync {
		local, _, _ := strings.Cut(s.Path, ":")
		exists(t, "dev.users.sync.path", local)
	}
}

// TestE2EJobCallsTheService: the e2e Job runs the image built from the e2e
// stage and calls the Service the chart creates, on its gRPC port, and the
// chart's NetworkPolicy admits it there.
func TestE2EJobCallsTheService(t *testing.T) {
	t.Parallel()
	c := load(t)
	d, ok := c.Deployments["users-e2e"]
	if !ok || d.Kubectl == nil || len(d.Kubectl.Manifests) != 1 {
		t.Fatal("no kubectl deployment users-e2e with one manifest")
	}
	src, err := os.ReadFile(exists(t, "users-e2e manifest", d.Kubectl.Manifests[0]))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kube.Decode(src)
	if err != nil || len(objs) != 1 {
		t.Fatalf("users-e2e manifest: %d objects, %v; want one Job", len(objs), err)
	}
	job, ok := objs[0].Object.(*batchv1.Job)
	if !ok {
		t.Fatalf("users-e2e manifest holds a %s, want a Job", objs[0].GVK.Kind)
	}
	ct := job.Spec.Template.Spec.Containers[0]
	if want := c.Images["users-e2e"].Image; ct.Image != want {
		t.Errorf("e2e Job image %q, want %q (DevSpace replaces it by that name)", ct.Image, want)
	}
	var address string
	for _, e := range ct.Env {
		if e.Name == "USERS_ADDRESS" {
			address = e.Value
		}
	}
	want := ""
	var grpcPort corev1.ContainerPort
	for _, o := range renderChart(t, c) {
		switch v := o.Object.(type) {
		case *corev1.Service:
			for _, p := range v.Spec.Ports {
				if p.Name == "grpc" {
					want = fmt.Sprintf("%s:%d", v.Name, p.Port)
				}
			}
		case *appsv1.Deployment:
			for _, p := range v.Spec.Template.Spec.Containers[0].Ports {
				if p.Name == "grpc" {
					grpcPort = p
				}
			}
		}
	}
	if address != want {
		t.Errorf("e2e Job USERS_ADDRESS %q, want the chart's gRPC Service %q", address, want)
	}
	e2e := kube.Peer{Namespace: "dev", Labels: job.Spec.Template.Labels}
	for _, o := range renderChart(t, c) {
		if np, ok := o.Object.(*networkingv1.NetworkPolicy); ok && !kube.Admits(np, "dev", e2e, grpcPort) {
			t.Errorf("the chart's NetworkPolicy does not admit the e2e Job's pod %v on gRPC", job.Spec.Template.Labels)
		}
	}
}

// builtins are DevSpace's pipeline commands that name images, deployments
// or dev configurations.
var builtins = regexp.MustCompile(`(?m)^\s*(build_images|create_deployments|start_dev)\s+(.*)$`)

// TestPipelinesName: every image, deployment and dev configuration a
// pipeline or function names exists, and every function is used.
func TestPipelinesName(t *testing.T) {
	t.Parallel()
	c := load(t)
	scripts := map[string]string{}
	for name, p := range c.Pipelines {
		scripts["pipelines."+name] = p.Run
	}
	for name, f := range c.Functions {
		scripts["functions."+name] = f
	}
	for where, script := range scripts {
		for _, m := range builtins.FindAllStringSubmatch(script, -1) {
			for _, arg := range strings.Fields(m[2]) {
				if strings.HasPrefix(arg, "-") {
					continue
				}
				var known bool
				switch m[1] {
				case "build_images":
					_, known = c.Images[arg]
				case "create_deployments":
					_, known = c.Deployments[arg]
				case "start_dev":
					_, known = c.Dev[arg]
				}
				if !known {
					t.Errorf("%s: %s %s: no such name", where, m[1], arg)
				}
			}
		}
	}
	for name := range c.Functions {
		used := false
		for _, p := range c.Pipelines {
			used = used || regexp.MustCompile(`(?m)^\s*`+regexp.QuoteMeta(name)+`\s*$`).MatchString(p.Run)
		}
		if !used {
			t.Errorf("functions.%s is called by no pipeline", name)
		}
	}
	for _, want := range []string{"dev", "e2e"} {
		if _, ok := c.Pipelines[want]; !ok {
			t.Errorf("no %s pipeline", want)
		}
	}
}
