// Package devspace checks devspace.yaml offline. DevSpace itself is not in
// the Go module proxy and needs a cluster, so the file is decoded strictly
// into the part of DevSpace's v2beta1 schema it uses (the structs below
// mirror DevSpace's own field names: a misspelt or unsupported key fails),
// and what it refers to is followed: the files exist, the Dockerfile has
// the targets, the manifests and the chart render and strictly decode, the
// pods are restricted, and the dev selector picks the chart's pod.
package devspace

// config is devspace.yaml: the fields of DevSpace's v2beta1 schema
// (pkg/devspace/config/versions/latest) that this project uses. A field
// DevSpace has but this file does not use yet must be added here first.
type config struct {
	Version     string                `json:"version"`
	Name        string                `json:"name"`
	Images      map[string]image      `json:"images,omitempty"`
	Deployments map[string]deployment `json:"deployments,omitempty"`
	Dev         map[string]devPod     `json:"dev,omitempty"`
	Functions   map[string]string     `json:"functions,omitempty"`
	Pipelines   map[string]pipeline   `json:"pipelines,omitempty"`
}

type image struct {
	Image      string            `json:"image"`
	Dockerfile string            `json:"dockerfile,omitempty"`
	Context    string            `json:"context,omitempty"`
	Target     string            `json:"target,omitempty"`
	BuildArgs  map[string]string `json:"buildArgs,omitempty"`
	Tags       []string          `json:"tags,omitempty"`
}

type deployment struct {
	Namespace string   `json:"namespace,omitempty"`
	Helm      *helm    `json:"helm,omitempty"`
	Kubectl   *kubectl `json:"kubectl,omitempty"`
}

type helm struct {
	ReleaseName string         `json:"releaseName,omitempty"`
	Chart       chart          `json:"chart"`
	Values      map[string]any `json:"values,omitempty"`
	ValuesFiles []string       `json:"valuesFiles,omitempty"`
	UpgradeArgs []string       `json:"upgradeArgs,omitempty"`
}

type chart struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
}

type kubectl struct {
	Manifests []string `json:"manifests"`
}

type devPod struct {
	LabelSelector map[string]string `json:"labelSelector,omitempty"`
	ImageSelector string            `json:"imageSelector,omitempty"`
	Container     string            `json:"container,omitempty"`
	DevImage      string            `json:"devImage,omitempty"`
	WorkingDir    string            `json:"workingDir,omitempty"`
	Command       []string          `json:"command,omitempty"`
	Args          []string          `json:"args,omitempty"`
	Env           []envVar          `json:"env,omitempty"`
	Resources     *resources        `json:"resources,omitempty"`
	Sync          []sync            `json:"sync,omitempty"`
	RestartHelper *restartHelper    `json:"restartHelper,omitempty"`
	Ports         []port            `json:"ports,omitempty"`
	Patches       []patch           `json:"patches,omitempty"`
	Terminal      map[string]any    `json:"terminal,omitempty"`
	Logs          map[string]any    `json:"logs,omitempty"`
}

type envVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type resources struct {
	Requests map[string]string `json:"requests,omitempty"`
	Limits   map[string]string `json:"limits,omitempty"`
}

type sync struct {
	Path           string    `json:"path"`
	ExcludePaths   []string  `json:"excludePaths,omitempty"`
	StartContainer bool      `json:"startContainer,omitempty"`
	OnUpload       *onUpload `json:"onUpload,omitempty"`
}

type onUpload struct {
	RestartContainer bool `json:"restartContainer,omitempty"`
}

type restartHelper struct {
	Inject *bool `json:"inject,omitempty"`
}

type port struct {
	Port        string `json:"port"`
	BindAddress string `json:"bindAddress,omitempty"`
}

type patch struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

type pipeline struct {
	Run string `json:"run"`
}
