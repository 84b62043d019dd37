package kube

import (
	"encoding/json"

	cnpgv1 "github.com/cloudnative-pg/api/pkg/api/v1"
	barmanapi "github.com/cloudnative-pg/barman-cloud/pkg/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// CloudNativePG's kinds decode too: its API module's types (Cluster,
// ScheduledBackup, ...), and the Barman Cloud Plugin's ObjectStore.
func init() {
	if err := cnpgv1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	scheme.AddKnownTypes(ObjectStoreGroupVersion, &ObjectStore{})
}

// ObjectStoreGroupVersion is the Barman Cloud Plugin's API group.
var ObjectStoreGroupVersion = schema.GroupVersion{Group: "barmancloud.cnpg.io", Version: "v1"}

// ObjectStore is the Barman Cloud Plugin's ObjectStore
// (github.com/cloudnative-pg/plugin-barman-cloud api/v1, v0.15.0), field
// for field. The plugin's module cannot be required here: it needs
// barman-cloud and machinery v0.6.0, which the Go module proxy does not
// serve. Its configuration is barman-cloud's own type, at v0.5.1 here
// (what CloudNativePG's API module requires), so only this wrapper is
// copied.
type ObjectStore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ObjectStoreSpec `json:"spec"`
	Status            struct {
		ServerRecoveryWindow map[string]struct {
			FirstRecoverabilityPoint *metav1.Time `json:"firstRecoverabilityPoint,omitempty"`
			LastSuccessfulBackupTime *metav1.Time `json:"lastSuccessfulBackupTime,omitempty"`
			LastFailedBackupTime     *metav1.Time `json:"lastFailedBackupTime,omitempty"`
		} `json:"serverRecoveryWindow,omitempty"`
	} `json:"status,omitempty"`
}

// ObjectStoreSpec is the plugin's ObjectStoreSpec.
type ObjectStoreSpec struct {
	Configuration barmanapi.BarmanObjectStoreConfiguration `json:"configuration"`
	// RetentionPolicy is a recovery window: a positive number of days,
	// weeks or months (30d).
	RetentionPolicy              string `json:"retentionPolicy,omitempty"`
	InstanceSidecarConfiguration struct {
		Env                            []corev1.EnvVar             `json:"env,omitempty"`
		RetentionPolicyIntervalSeconds int                         `json:"retentionPolicyIntervalSeconds,omitempty"`
		Resources                      corev1.ResourceRequirements `json:"resources,omitempty"`
		AdditionalContainerArgs        []string                    `json:"additionalContainerArgs,omitempty"`
		LogLevel                       string                      `json:"logLevel,omitempty"`
	} `json:"instanceSidecarConfiguration,omitempty"`
}

// DeepCopyObject makes ObjectStore a runtime.Object. A round trip through
// JSON is deep, and enough for a decoder's checks.
func (o *ObjectStore) DeepCopyObject() runtime.Object {
	b, err := json.Marshal(o)
	if err != nil {
		panic(err)
	}
	var c ObjectStore
	if err := json.Unmarshal(b, &c); err != nil {
		panic(err)
	}
	return &c
}
