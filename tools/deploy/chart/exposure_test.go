package chart

import (
	"net/netip"
	"slices"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/agynio/users/tools/deploy/kube"
)

// named returns the object of type T called name among objs.
func named[T interface{ GetName() string }](t *testing.T, objs []kube.Object, name string) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.Object.(T); ok && v.GetName() == name {
			return v
		}
	}
	var zero T
	t.Fatalf("no %T named %q", zero, name)
	return zero
}

func containerPort(t *testing.T, c corev1.Container, name string) corev1.ContainerPort {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("container %s has no port %q", c.Name, name)
	return corev1.ContainerPort{}
}

// Callers of the service, as the NetworkPolicy sees them.
var (
	labelledClient = kube.Peer{Namespace: "platform", Labels: map[string]string{"users-client": "true"}, IP: netip.MustParseAddr("10.244.1.10")}
	platformPod    = kube.Peer{Namespace: "platform", Labels: map[string]string{"app.kubernetes.io/name": "chat"}, IP: netip.MustParseAddr("10.244.1.11")}
	otherNSPod     = kube.Peer{Namespace: "agents", Labels: map[string]string{"users-client": "true"}, IP: netip.MustParseAddr("10.244.2.10")}
	prometheus     = kube.Peer{Namespace: "monitoring", Labels: map[string]string{"app.kubernetes.io/name": "prometheus"}, IP: netip.MustParseAddr("10.244.3.10")}
	monitoringPod  = kube.Peer{Namespace: "monitoring", Labels: map[string]string{"app.kubernetes.io/name": "grafana"}, IP: netip.MustParseAddr("10.244.3.11")}
	gateway        = kube.Peer{Namespace: "platform", Labels: map[string]string{"app.kubernetes.io/name": "gateway"}, IP: netip.MustParseAddr("10.244.1.12")}
	orchestrator   = kube.Peer{Namespace: "agents", Labels: map[string]string{"app.kubernetes.io/component": "orchestrator"}, IP: netip.MustParseAddr("10.244.2.11")}
	node           = kube.Peer{IP: netip.MustParseAddr("10.0.4.2")}
)

// TestNetworkPolicyByDefault: with the default values the service's pods
// take gRPC calls only from the pods named in networkPolicy.grpcFrom (of
// the release's namespace, labelled users-client=true), and the admin port
// only from the Prometheus in "monitoring"; not from any pod of the
// cluster, nor from any pod of their own namespace. The other value sets
// admit whom they name, and an empty list admits no one rather than
// everyone.
func TestNetworkPolicyByDefault(t *testing.T) {
	t.Parallel()
	type call struct {
		who  string
		peer kube.Peer
		port string
		want bool
	}
	for _, tc := range []struct {
		name  string
		args  []string
		calls []call
	}{
		{
			name: "default values",
			calls: []call{
				{"a labelled client of the namespace", labelledClient, "grpc", true},
				{"an unlabelled pod of the namespace", platformPod, "grpc", false},
				{"a labelled pod of another namespace", otherNSPod, "grpc", false},
				{"Prometheus", prometheus, "grpc", false},
				{"a labelled client of the namespace", labelledClient, "admin", false},
				{"Prometheus", prometheus, "admin", true},
				{"another pod of the monitoring namespace", monitoringPod, "admin", false},
				{"an unlabelled pod of the namespace", platformPod, "admin", false},
			},
		},
		{
			name: "everything enabled",
			args: []string{"-f", "ci/everything-values.yaml"},
			calls: []call{
				{"the gateway of the namespace", gateway, "grpc", true},
				{"the orchestrator of the agents namespace", orchestrator, "grpc", true},
				{"the nodes, by address", node, "grpc", true},
				{"a labelled client, not named here", labelledClient, "grpc", false},
				{"another pod of the agents namespace", otherNSPod, "grpc", false},
				{"the gateway", gateway, "admin", false},
				{"Prometheus' namespace", monitoringPod, "admin", true},
			},
		},
		{
			name: "empty lists",
			args: []string{"--set-json", "networkPolicy.grpcFrom=[],networkPolicy.adminFrom=[]"},
			calls: []call{
				{"a labelled client of the namespace", labelledClient, "grpc", false},
				{"a pod of another namespace", otherNSPod, "grpc", false},
				{"Prometheus", prometheus, "admin", false},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			objs := decode(t, tc.args...)
			np := find[*networkingv1.NetworkPolicy](t, objs)
			d := find[*appsv1.Deployment](t, objs)
			if !mustSelector(t, &np.Spec.PodSelector).Matches(labels.Set(d.Spec.Template.Labels)) {
				t.Fatalf("the NetworkPolicy does not select the service's pods")
			}
			c := container(t, d.Spec.Template.Spec, "users")
			for _, call := range tc.calls {
				if got := kube.Admits(np, "platform", call.peer, containerPort(t, c, call.port)); got != call.want {
					t.Errorf("%s on port %s: admitted %t, want %t", call.who, call.port, got, call.want)
				}
			}
		})
	}
}

// TestAdminPortOffTheClientService: the client Service carries gRPC only,
// so that service.type LoadBalancer (set in everything-values.yaml) never
// publishes /metrics or the health endpoints; the admin port is on a
// Service of its own that is ClusterIP whatever service.type says, and the
// ServiceMonitor scrapes through that one.
func TestAdminPortOffTheClientService(t *testing.T) {
	t.Parallel()
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			objs := decode(t, vs.args...)
			c := container(t, find[*appsv1.Deployment](t, objs).Spec.Template.Spec, "users")
			adminPort := containerPort(t, c, "admin")
			reaches := func(p corev1.ServicePort) bool {
				return p.TargetPort.String() == "admin" || p.TargetPort.IntVal == adminPort.ContainerPort
			}

			client := named[*corev1.Service](t, objs, "users")
			if i := slices.IndexFunc(client.Spec.Ports, reaches); i >= 0 {
				t.Errorf("client Service (type %s) exposes the admin port as %q", client.Spec.Type, client.Spec.Ports[i].Name)
			}
			if len(client.Spec.Ports) != 1 || client.Spec.Ports[0].TargetPort.String() != "grpc" {
				t.Errorf("client Service ports %v, want gRPC alone", portNames(client))
			}

			admin := named[*corev1.Service](t, objs, "users-admin")
			if admin.Spec.Type != corev1.ServiceTypeClusterIP {
				t.Errorf("admin Service type %s, want ClusterIP", admin.Spec.Type)
			}
			if len(admin.Spec.Ports) != 1 || !reaches(admin.Spec.Ports[0]) {
				t.Errorf("admin Service ports %v, want the admin port alone", portNames(admin))
			}

			for _, o := range objs {
				sm, ok := o.Object.(*monitoringv1.ServiceMonitor)
				if !ok {
					continue
				}
				sel := mustSelector(t, &sm.Spec.Selector)
				if !sel.Matches(labels.Set(admin.Labels)) {
					t.Errorf("ServiceMonitor does not select the admin Service")
				}
				if sel.Matches(labels.Set(client.Labels)) {
					t.Errorf("ServiceMonitor selects the client Service too")
				}
			}
		})
	}
}

func portNames(svc *corev1.Service) []string {
	var names []string
	for _, p := range svc.Spec.Ports {
		names = append(names, p.Name+"->"+p.TargetPort.String())
	}
	return names
}
