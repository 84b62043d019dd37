package kube

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Peer is a pod that opens a connection, as a NetworkPolicy sees it.
type Peer struct {
	Namespace string
	// NamespaceLabels are its namespace's labels; kubernetes.io/metadata.name
	// is added as the API server adds it.
	NamespaceLabels map[string]string
	Labels          map[string]string
	IP              netip.Addr
}

// Admits is a NetworkPolicy evaluator of its own because no maintained one
// installs offline: np-guard's netpol-analyzer is not served by the Go
// module proxy, and no Kubernetes library evaluates policies outside a
// network plugin.
//
// Admits reports whether the ingress rules of np, a policy in namespace
// policyNamespace that selects the target pod, let peer connect to the
// target's container port. It follows the NetworkPolicy semantics of
// networking.k8s.io/v1: a rule without ports admits every port, a rule
// without peers admits every source, a peer with only a podSelector means
// pods of the policy's namespace, and a policy without the Ingress type
// restricts no ingress.
func Admits(np *networkingv1.NetworkPolicy, policyNamespace string, peer Peer, port corev1.ContainerPort) bool {
	if !hasIngressType(np) {
		return true
	}
	for _, rule := range np.Spec.Ingress {
		if !portMatches(rule.Ports, port) {
			continue
		}
		if len(rule.From) == 0 {
			return true
		}
		for _, from := range rule.From {
			if peerMatches(from, policyNamespace, peer) {
				return true
			}
		}
	}
	return false
}

func hasIngressType(np *networkingv1.NetworkPolicy) bool {
	if len(np.Spec.PolicyTypes) == 0 {
		return true // the API server's default when policyTypes is left out
	}
	for _, t := range np.Spec.PolicyTypes {
		if t == networkingv1.PolicyTypeIngress {
			return true
		}
	}
	return false
}

func portMatches(ports []networkingv1.NetworkPolicyPort, port corev1.ContainerPort) bool {
	if len(ports) == 0 {
		return true
	}
	protocol := port.Protocol
	if protocol == "" {
		protocol = corev1.ProtocolTCP
	}
	for _, p := range ports {
		want := corev1.ProtocolTCP
		if p.Protocol != nil {
			want = *p.Protocol
		}
		if want != protocol {
			continue
		}
		switch {
		case p.Port == nil:
			return true
		case p.Port.Type == intstr.String:
			if p.Port.StrVal == port.Name {
				return true
			}
		case p.EndPort != nil:
			if port.ContainerPort >= p.Port.IntVal && port.ContainerPort <= *p.EndPort {
				return true
			}
		case p.Port.IntVal == port.ContainerPort:
			return true
		}
	}
	return false
}

func peerMatches(from networkingv1.NetworkPolicyPeer, policyNamespace string, peer Peer) bool {
	if from.IPBlock != nil {
		return ipMatches(*from.IPBlock, peer.IP)
	}
	if from.NamespaceSelector == nil {
		if peer.Namespace != policyNamespace {
			return false
		}
	} else {
		ns := labels.Set{"kubernetes.io/metadata.name": peer.Namespace}
		for k, v := range peer.NamespaceLabels {
			ns[k] = v
		}
		if !selects(from.NamespaceSelector, ns) {
			return false
		}
	}
	return from.PodSelector == nil || selects(from.PodSelector, labels.Set(peer.Labels))
}

// selects treats a selector that does not parse as selecting nothing: the
// API server would have refused it.
func selects(ls *metav1.LabelSelector, set labels.Set) bool {
	sel, err := metav1.LabelSelectorAsSelector(ls)
	return err == nil && sel.Matches(set)
}

func ipMatches(block networkingv1.IPBlock, ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	cidr, err := netip.ParsePrefix(block.CIDR)
	if err != nil || !cidr.Contains(ip) {
		return false
	}
	for _, except := range block.Except {
		if ex, err := netip.ParsePrefix(except); err == nil && ex.Contains(ip) {
			return false
		}
	}
	return true
}
