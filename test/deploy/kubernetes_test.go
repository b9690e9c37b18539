package deploy_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// The parts of the Kubernetes objects that the checks read. Fields they do not name are
// ignored, so a misspelt field reads as unset, and the check that needs it says so.
type (
	meta struct {
		Name        string            `json:"name"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	}
	object struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   meta   `json:"metadata"`
	}
	labelSelector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	}
	deployment struct {
		object
		Spec struct {
			Replicas *int          `json:"replicas"`
			Selector labelSelector `json:"selector"`
			Template struct {
				Metadata meta    `json:"metadata"`
				Spec     podSpec `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	podSpec struct {
		TerminationGracePeriodSeconds *int        `json:"terminationGracePeriodSeconds"`
		Containers                    []container `json:"containers"`
		Volumes                       []volume    `json:"volumes"`
	}
	container struct {
		Name           string        `json:"name"`
		Env            []envVar      `json:"env"`
		Ports          []portSpec    `json:"ports"`
		LivenessProbe  *probe        `json:"livenessProbe"`
		ReadinessProbe *probe        `json:"readinessProbe"`
		VolumeMounts   []volumeMount `json:"volumeMounts"`
	}
	envVar struct {
		Name      string `json:"name"`
		Value     string `json:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `json:"fieldPath"`
			} `json:"fieldRef"`
			SecretKeyRef *struct {
				Name string `json:"name"`
				Key  string `json:"key"`
			} `json:"secretKeyRef"`
		} `json:"valueFrom"`
	}
	portSpec struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	}
	probe struct {
		HTTPGet *struct {
			Path   string      `json:"path"`
			Port   intOrString `json:"port"`
			Scheme string      `json:"scheme"`
		} `json:"httpGet"`
		TimeoutSeconds *int `json:"timeoutSeconds"`
	}
	volumeMount struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
		ReadOnly  bool   `json:"readOnly"`
	}
	volume struct {
		Name   string `json:"name"`
		Secret *struct {
			SecretName string       `json:"secretName"`
			Items      []secretItem `json:"items"`
		} `json:"secret"`
	}
	secretItem struct {
		Key  string `json:"key"`
		Path string `json:"path"`
	}
	podDisruptionBudget struct {
		object
		Spec struct {
			MinAvailable   *intOrString  `json:"minAvailable"`
			MaxUnavailable *intOrString  `json:"maxUnavailable"`
			Selector       labelSelector `json:"selector"`
		} `json:"spec"`
	}
	service struct {
		object
		Spec struct {
			Selector map[string]string `json:"selector"`
			Ports    []struct {
				Name       string      `json:"name"`
				Port       int         `json:"port"`
				TargetPort intOrString `json:"targetPort"`
			} `json:"ports"`
		} `json:"spec"`
	}
)

// intOrString is Kubernetes' IntOrString: a port number or name, a count or a percentage.
type intOrString struct {
	Int    int
	String string // set when the value is a string
}

func (v *intOrString) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &v.String)
	}
	return json.Unmarshal(b, &v.Int)
}

func (v intOrString) text() string {
	if v.String != "" {
		return strconv.Quote(v.String)
	}
	return strconv.Itoa(v.Int)
}

// manifests are the objects of a multi-document YAML file.
type manifests struct {
	deployments []deployment
	pdbs        []podDisruptionBudget
	services    []service
	others      []object
}

var documentSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

func parseManifests(text string) (manifests, error) {
	var m manifests
	for i, doc := range documentSeparator.Split(text, -1) {
		var head object
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return m, fmt.Errorf("document %d: %v", i+1, err)
		}
		var err error
		switch head.Kind {
		case "":
			if strings.TrimSpace(stripComments(doc)) != "" {
				return m, fmt.Errorf("document %d has no kind", i+1)
			}
		case "Deployment":
			var d deployment
			err = yaml.Unmarshal([]byte(doc), &d)
			m.deployments = append(m.deployments, d)
		case "PodDisruptionBudget":
			var p podDisruptionBudget
			err = yaml.Unmarshal([]byte(doc), &p)
			m.pdbs = append(m.pdbs, p)
		case "Service":
			var s service
			err = yaml.Unmarshal([]byte(doc), &s)
			m.services = append(m.services, s)
		default:
			m.others = append(m.others, head)
		}
		if err != nil {
			return m, fmt.Errorf("document %d (%s %s): %v", i+1, head.Kind, head.Metadata.Name, err)
		}
	}
	return m, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// selects reports whether a selector's labels are all among labels (and it has some).
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// containerPort resolves a probe's or a Service's port, a number or a port name, to a
// port the container declares.
func containerPort(c container, p intOrString) (int, error) {
	for _, cp := range c.Ports {
		if (p.String != "" && cp.Name == p.String) || (p.String == "" && cp.ContainerPort == p.Int) {
			return cp.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("port %s is none of container %q's ports", p.text(), c.Name)
}

// podEnv is the environment a container gets, with a sample pod name for the downward
// API's metadata.name and placeholders for secrets. fromPodName says whether ETCDKIT_ID
// comes from the pod name.
func podEnv(c container, podName string) (env map[string]string, idFrom string) {
	env = map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			if e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
				env[e.Name] = podName
			} else {
				env[e.Name] = "field-" + strings.ReplaceAll(e.ValueFrom.FieldRef.FieldPath, "/", "-")
			}
			if e.Name == "ETCDKIT_ID" {
				idFrom = "fieldRef " + e.ValueFrom.FieldRef.FieldPath
			}
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "secret-" + e.ValueFrom.SecretKeyRef.Key
		}
		if e.Name == "ETCDKIT_ID" && idFrom == "" {
			idFrom = fmt.Sprintf("value %q", e.Value)
		}
	}
	return env, idFrom
}
