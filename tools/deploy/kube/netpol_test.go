package kube

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"
)

// TestAdmits holds Admits to the NetworkPolicy semantics the chart tests
// rely on, the surprising ones first.
func TestAdmits(t *testing.T) {
	t.Parallel()
	grpc := corev1.ContainerPort{Name: "grpc", ContainerPort: 50051}
	admin := corev1.ContainerPort{Name: "admin", ContainerPort: 8080}
	client := Peer{Namespace: "platform", Labels: map[string]string{"role": "client"}, IP: netip.MustParseAddr("10.1.0.7")}
	other := Peer{Namespace: "platform", Labels: map[string]string{"role": "other"}, IP: netip.MustParseAddr("10.2.0.7")}
	remoteClient := Peer{Namespace: "agents", Labels: map[string]string{"role": "client"}, IP: netip.MustParseAddr("10.3.0.7")}
	prometheus := Peer{Namespace: "monitoring", Labels: map[string]string{"app": "prometheus"}}

	for _, tc := range []struct {
		name   string
		policy string
		peer   Peer
		port   corev1.ContainerPort
		want   bool
	}{
		{
			name:   "a rule without from admits every source",
			policy: "ingress: [{ports: [{port: grpc}]}]",
			peer:   remoteClient, port: grpc, want: true,
		},
		{
			name:   "a policy with no rule admits no one",
			policy: "policyTypes: [Ingress]",
			peer:   client, port: grpc, want: false,
		},
		{
			name:   "a podSelector alone means pods of the policy's namespace",
			policy: "ingress: [{from: [{podSelector: {matchLabels: {role: client}}}]}]",
			peer:   remoteClient, port: grpc, want: false,
		},
		{
			name:   "a podSelector alone admits a matching pod of the policy's namespace",
			policy: "ingress: [{from: [{podSelector: {matchLabels: {role: client}}}]}]",
			peer:   client, port: grpc, want: true,
		},
		{
			name:   "a podSelector does not admit another pod",
			policy: "ingress: [{from: [{podSelector: {matchLabels: {role: client}}}]}]",
			peer:   other, port: grpc, want: false,
		},
		{
			name:   "a namespaceSelector and podSelector in one peer both have to match",
			policy: "ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}, podSelector: {matchLabels: {app: prometheus}}}]}]",
			peer:   prometheus, port: admin, want: true,
		},
		{
			name:   "a namespaceSelector does not admit a pod of another namespace",
			policy: "ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]}]",
			peer:   client, port: admin, want: false,
		},
		{
			name:   "a rule for one port does not admit another",
			policy: "ingress: [{ports: [{port: admin}], from: [{podSelector: {}}]}]",
			peer:   client, port: grpc, want: false,
		},
		{
			name:   "a numbered port matches the container port",
			policy: "ingress: [{ports: [{port: 50051}], from: [{podSelector: {}}]}]",
			peer:   client, port: grpc, want: true,
		},
		{
			name:   "an ipBlock admits an address inside it",
			policy: "ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.2.0.0/16]}}]}]",
			peer:   remoteClient, port: grpc, want: true,
		},
		{
			name:   "an ipBlock does not admit an address in its except",
			policy: "ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.2.0.0/16]}}]}]",
			peer:   other, port: grpc, want: false,
		},
		{
			name:   "a policy for egress only restricts no ingress",
			policy: "policyTypes: [Egress]",
			peer:   remoteClient, port: grpc, want: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var np networkingv1.NetworkPolicy
			if err := yaml.UnmarshalStrict([]byte("spec: {podSelector: {}, "+tc.policy+"}"), &np); err != nil {
				t.Fatal(err)
			}
			if got := Admits(&np, "platform", tc.peer, tc.port); got != tc.want {
				t.Errorf("Admits(%s, %+v, port %s) = %t, want %t", tc.policy, tc.peer, tc.port.Name, got, tc.want)
			}
		})
	}
}
