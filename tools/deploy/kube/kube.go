// Package kube validates Kubernetes manifests offline, the way the API
// server would with strict field validation: each document is decoded into
// its Go type (k8s.io/api, the Prometheus Operator's for ServiceMonitor,
// cert-manager's for Certificate)
// and an unknown, misspelt or duplicated field is an error. Pods, and the
// pod templates of workloads, can also be held to a Pod Security level.
//
// kubeconform would need its JSON schemas downloaded; the Go types are the
// schema the API server itself decodes with, and the module proxy has them.
package kube

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/pod-security-admission/admission"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Object is one decoded document.
type Object struct {
	GVK    schema.GroupVersionKind
	Name   string
	Object runtime.Object
}

// String names the object as kubectl would: Kind/name.
func (o Object) String() string { return o.GVK.Kind + "/" + o.Name }

// scheme knows every built-in kind, the ServiceMonitor and cert-manager's
// kinds.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := monitoringv1.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := certmanagerv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

// Decode splits a multi-document YAML stream and strictly decodes every
// document that is not empty. A kind the scheme does not know is an error
// too: it could not be checked.
func Decode(manifests []byte) ([]Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifests)))
	var objs []Object
	var errs []error
	for i := 1; ; i++ {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if isEmpty(doc) {
			continue
		}
		obj, err := decodeOne(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d (%s): %w", i, describe(doc), err))
			continue
		}
		objs = append(objs, obj)
	}
	return objs, errors.Join(errs...)
}

func decodeOne(doc []byte) (Object, error) {
	// YAMLToJSONStrict refuses duplicate keys, which plain YAML allows
	// (the last one silently wins).
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return Object{}, err
	}
	var tm metav1.TypeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &tm); err != nil {
		return Object{}, err
	}
	gvk := schema.FromAPIVersionAndKind(tm.APIVersion, tm.Kind)
	if tm.APIVersion == "" || tm.Kind == "" {
		return Object{}, errors.New("no apiVersion or kind")
	}
	obj, err := scheme.New(gvk)
	if err != nil {
		return Object{}, fmt.Errorf("unknown kind %s: %w", gvk, err)
	}
	// The API server's own strict decoding: case-sensitive field names,
	// unknown and duplicate fields reported.
	strict, err := kjson.UnmarshalStrict(js, obj)
	if err != nil {
		return Object{}, err
	}
	if err := errors.Join(strict...); err != nil {
		return Object{}, err
	}
	meta, ok := obj.(metav1.Object)
	if !ok {
		return Object{}, fmt.Errorf("%s has no object metadata", gvk)
	}
	if meta.GetName() == "" {
		return Object{}, errors.New("no metadata.name")
	}
	return Object{GVK: gvk, Name: meta.GetName(), Object: obj}, nil
}

// isEmpty reports whether a document holds nothing but comments and space.
func isEmpty(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") && line != "---" {
			return false
		}
	}
	return true
}

// describe names a document that did not decode, for the error message.
func describe(doc []byte) string {
	var head struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if yaml.Unmarshal(doc, &head) != nil || head.Kind == "" {
		return "unparsed"
	}
	return head.Kind + "/" + head.Metadata.Name
}

// PodTemplate returns the pod metadata and spec an object runs, and false
// for objects that run no pods. The kinds are those the Pod Security
// admission plugin itself looks into, found by its own extractor.
func PodTemplate(obj runtime.Object) (*metav1.ObjectMeta, *corev1.PodSpec, bool) {
	meta, spec, err := admission.DefaultPodSpecExtractor{}.ExtractPodSpec(obj)
	return meta, spec, err == nil && spec != nil
}

// evaluator holds the Pod Security Standards as the admission plugin of
// this k8s.io/pod-security-admission version enforces them.
var evaluator = func() policy.Evaluator {
	e, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		panic(err)
	}
	return e
}()

// Restricted returns nil if the pod would be admitted into a namespace
// enforcing the restricted Pod Security Standard at its latest version,
// and otherwise an error with every reason, as the admission plugin
// words it.
func Restricted(meta *metav1.ObjectMeta, spec *corev1.PodSpec) error {
	lv := psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}
	result := policy.AggregateCheckResults(evaluator.EvaluatePod(lv, meta, spec))
	if result.Allowed {
		return nil
	}
	return fmt.Errorf("violates PodSecurity %q: %s", "restricted:latest", result.ForbiddenDetail())
}
