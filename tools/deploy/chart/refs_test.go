package chart

import (
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestReferences follows what one rendered object says about another,
// which no schema checks: each selector picks the service's pods and not
// the migration Job's, and each named port exists where it is looked up.
func TestReferences(t *testing.T) {
	t.Parallel()
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			t.Parallel()
			objs := decode(t, vs.args...)
			d := find[*appsv1.Deployment](t, objs)
			pod := labels.Set(d.Spec.Template.Labels)
			job := labels.Set(find[*batchv1.Job](t, objs).Spec.Template.Labels)
			c := container(t, d.Spec.Template.Spec, "users")

			selects := func(what string, sel labels.Selector) {
				t.Helper()
				if !sel.Matches(pod) {
					t.Errorf("%s selector %s does not select the Deployment's pods %v", what, sel, pod)
				}
				if sel.Matches(job) {
					t.Errorf("%s selector %s selects the migration Job's pod too", what, sel)
				}
			}
			selects("Deployment", mustSelector(t, d.Spec.Selector))

			// Ports by Service name: the client Service and the admin one.
			svcPorts := map[string]map[string]bool{}
			for _, o := range objs {
				svc, ok := o.Object.(*corev1.Service)
				if !ok {
					continue
				}
				selects("Service "+svc.Name, labels.SelectorFromSet(svc.Spec.Selector))
				svcPorts[svc.Name] = map[string]bool{}
				for _, p := range svc.Spec.Ports {
					svcPorts[svc.Name][p.Name] = true
					hasContainerPort(t, "Service "+svc.Name+" port "+p.Name, c, p.TargetPort)
				}
			}
			if !svcPorts["users"]["grpc"] || !svcPorts["users-admin"]["admin"] {
				t.Errorf("Service ports %v, want grpc on users and admin on users-admin", svcPorts)
			}
			for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
				if p.HTTPGet != nil {
					hasContainerPort(t, "HTTP probe", c, p.HTTPGet.Port)
				}
				if p.GRPC != nil {
					hasContainerPort(t, "gRPC probe", c, intstr.FromInt32(p.GRPC.Port))
				}
			}

			for _, o := range objs {
				switch v := o.Object.(type) {
				case *policyv1.PodDisruptionBudget:
					selects("PodDisruptionBudget", mustSelector(t, v.Spec.Selector))
				case *networkingv1.NetworkPolicy:
					selects("NetworkPolicy", mustSelector(t, &v.Spec.PodSelector))
					for _, rule := range v.Spec.Ingress {
						for _, p := range rule.Ports {
							hasContainerPort(t, "NetworkPolicy port", c, *p.Port)
						}
					}
				case *monitoringv1.ServiceMonitor:
					sel := mustSelector(t, &v.Spec.Selector)
					for _, o := range objs {
						svc, ok := o.Object.(*corev1.Service)
						if !ok || !sel.Matches(labels.Set(svc.Labels)) {
							continue
						}
						for _, e := range v.Spec.Endpoints {
							if !svcPorts[svc.Name][e.Port] {
								t.Errorf("ServiceMonitor scrapes port %q of Service %s, which has none", e.Port, svc.Name)
							}
						}
					}
				case *autoscalingv2.HorizontalPodAutoscaler:
					ref := v.Spec.ScaleTargetRef
					if ref.Kind != "Deployment" || ref.Name != d.Name {
						t.Errorf("HPA scales %s/%s, want Deployment/%s", ref.Kind, ref.Name, d.Name)
					}
				}
			}
		})
	}
}

func mustSelector(t *testing.T, ls *metav1.LabelSelector) labels.Selector {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Empty() {
		t.Fatal("empty selector: it would select every pod of the namespace")
	}
	return sel
}

// hasContainerPort checks that port, by name or number, is one the
// container declares.
func hasContainerPort(t *testing.T, what string, c corev1.Container, port intstr.IntOrString) {
	t.Helper()
	for _, p := range c.Ports {
		if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
			return
		}
	}
	t.Errorf("%s refers to port %s, which container %s does not declare", what, port.String(), c.Name)
}
