package k8s_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	sigsyaml "sigs.k8s.io/yaml"
)

// bundle is one rendered overlay, every object decoded into its type.
type bundle struct {
	overlay string
	ids     []string // "kind namespace/name", in render order

	namespaces      []*corev1.Namespace
	serviceAccounts []*corev1.ServiceAccount
	configMaps      []*corev1.ConfigMap
	secrets         []*corev1.Secret
	services        []*corev1.Service
	deployments     []*appsv1.Deployment
	statefulSets    []*appsv1.StatefulSet
	pdbs            []*policyv1.PodDisruptionBudget
	networkPolicies []*networkingv1.NetworkPolicy
	ingresses       []*networkingv1.Ingress
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	scaledObjects   []*scaledObject
	serviceMonitors []*serviceMonitor
	prometheusRules []*prometheusRule
}

// The custom resources, as far as the consistency checks read them. Their
// full validation is against the CRD schemas.
type scaledObject struct {
	Metadata struct{ Name, Namespace string } `json:"metadata"`
	Spec     struct {
		ScaleTargetRef  struct{ Kind, Name string } `json:"scaleTargetRef"`
		MinReplicaCount *int32                      `json:"minReplicaCount"`
		MaxReplicaCount *int32                      `json:"maxReplicaCount"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig *struct {
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior"`
			} `json:"horizontalPodAutoscalerConfig"`
		} `json:"advanced"`
		Triggers []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

type serviceMonitor struct {
	Metadata struct{ Name string } `json:"metadata"`
	Spec     struct {
		Selector  metav1LabelSelector `json:"selector"`
		Endpoints []struct {
			Port string `json:"port"`
			Path string `json:"path"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type metav1LabelSelector struct {
	MatchLabels      map[string]string `json:"matchLabels"`
	MatchExpressions []struct {
		Key      string   `json:"key"`
		Operator string   `json:"operator"`
		Values   []string `json:"values"`
	} `json:"matchExpressions"`
}

// matches reports whether labels satisfy the selector (In/NotIn/Exists).
func (s metav1LabelSelector) matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		v, ok := labels[e.Key]
		switch e.Operator {
		case "In":
			if !ok || !slices.Contains(e.Values, v) {
				return false
			}
		case "NotIn":
			if ok && slices.Contains(e.Values, v) {
				return false
			}
		case "Exists":
			if !ok {
				return false
			}
		case "DoesNotExist":
			if ok {
				return false
			}
		}
	}
	return true
}

type prometheusRule struct {
	Metadata struct{ Name string } `json:"metadata"`
	Spec     struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Record      string            `json:"record"`
				Expr        string            `json:"expr"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// crdKinds maps the custom resources to their CRD files in testdata/crds.
var crdKinds = map[string]string{
	"keda.sh/v1alpha1 ScaledObject":           "keda.sh_scaledobjects.yaml",
	"keda.sh/v1alpha1 TriggerAuthentication":  "keda.sh_triggerauthentications.yaml",
	"monitoring.coreos.com/v1 ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
	"monitoring.coreos.com/v1 PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}

// overlays answers every directory under overlays/.
func overlays(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("overlays")
	if err != nil {
		t.Fatalf("read overlays: %v", err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	if len(dirs) == 0 {
		t.Fatal("no overlays under deploy/k8s/overlays")
	}
	return dirs
}

var (
	schemaCache = map[string]*jsonschema.Schema{}
)

// render builds an overlay with the kustomize Go API and decodes every
// object strictly: Kubernetes kinds into their k8s.io/api types with unknown
// fields rejected, custom resources against their CRD's OpenAPI schema with
// unknown fields rejected.
func render(t *testing.T, overlay string) *bundle {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join("overlays", overlay))
	if err != nil {
		t.Fatalf("kustomize build overlays/%s: %v", overlay, err)
	}
	b := &bundle{overlay: overlay}
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatalf("overlays/%s: %s: %v", overlay, r.CurId(), err)
		}
		gvk := r.GetGvk()
		apiVersion := gvk.ApiVersion()
		id := fmt.Sprintf("%s %s/%s", gvk.Kind, r.GetNamespace(), r.GetName())
		b.ids = append(b.ids, id)
		if err := b.decode(apiVersion, gvk.Kind, y); err != nil {
			t.Errorf("overlays/%s: %s (%s): %v", overlay, id, apiVersion, err)
		}
	}
	return b
}

// strict decodes y into a new T, rejecting unknown and duplicate fields.
func strict[T any](y []byte, into *[]*T) error {
	v := new(T)
	if err := sigsyaml.UnmarshalStrict(y, v); err != nil {
		return err
	}
	*into = append(*into, v)
	return nil
}

func (b *bundle) decode(apiVersion, kind string, y []byte) error {
	switch apiVersion + " " + kind {
	case "v1 Namespace":
		return strict(y, &b.namespaces)
	case "v1 ServiceAccount":
		return strict(y, &b.serviceAccounts)
	case "v1 ConfigMap":
		return strict(y, &b.configMaps)
	case "v1 Secret":
		return strict(y, &b.secrets)
	case "v1 Service":
		return strict(y, &b.services)
	case "apps/v1 Deployment":
		return strict(y, &b.deployments)
	case "apps/v1 StatefulSet":
		return strict(y, &b.statefulSets)
	case "policy/v1 PodDisruptionBudget":
		return strict(y, &b.pdbs)
	case "networking.k8s.io/v1 NetworkPolicy":
		return strict(y, &b.networkPolicies)
	case "networking.k8s.io/v1 Ingress":
		return strict(y, &b.ingresses)
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return strict(y, &b.hpas)
	}
	crd, ok := crdKinds[apiVersion+" "+kind]
	if !ok {
		return fmt.Errorf("no Go type or CRD schema for %s %s: add one to the test", apiVersion, kind)
	}
	if err := validateCR(crd, apiVersion, y); err != nil {
		return err
	}
	switch kind {
	case "ScaledObject":
		return lenient(y, &b.scaledObjects)
	case "ServiceMonitor":
		return lenient(y, &b.serviceMonitors)
	case "PrometheusRule":
		return lenient(y, &b.prometheusRules)
	}
	return nil
}

// lenient decodes the fields the consistency checks read; the schema
// already validated the whole object.
func lenient[T any](y []byte, into *[]*T) error {
	v := new(T)
	if err := sigsyaml.Unmarshal(y, v); err != nil {
		return err
	}
	*into = append(*into, v)
	return nil
}

// validateCR validates a custom resource against the OpenAPI v3 schema of
// its CRD version.
func validateCR(crdFile, apiVersion string, y []byte) error {
	version := apiVersion[strings.LastIndex(apiVersion, "/")+1:]
	key := crdFile + "#" + version
	sch, ok := schemaCache[key]
	if !ok {
		var err error
		sch, err = compileCRD(crdFile, version)
		if err != nil {
			return err
		}
		schemaCache[key] = sch
	}
	j, err := sigsyaml.YAMLToJSON(y)
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		return err
	}
	if err := sch.Validate(inst); err != nil {
		return fmt.Errorf("does not match CRD schema %s: %w", crdFile, err)
	}
	return nil
}

type crdDoc struct {
	Spec struct {
		Versions []struct {
			Name   string `json:"name"`
			Schema struct {
				OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
			} `json:"schema"`
		} `json:"versions"`
	} `json:"spec"`
}

func compileCRD(file, version string) (*jsonschema.Schema, error) {
	raw, err := os.ReadFile(filepath.Join("testdata", "crds", file))
	if err != nil {
		return nil, err
	}
	var crd crdDoc
	if err := sigsyaml.Unmarshal(raw, &crd); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	for _, v := range crd.Spec.Versions {
		if v.Name != version {
			continue
		}
		doc := structural(v.Schema.OpenAPIV3Schema)
		// Round-trip through JSON so numbers are what the compiler expects.
		j, err := json.Marshal(doc)
		if err != nil {
			return nil, err
		}
		d, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
		if err != nil {
			return nil, err
		}
		c := jsonschema.NewCompiler()
		url := "file:///" + file + "/" + version + ".json"
		if err := c.AddResource(url, d); err != nil {
			return nil, err
		}
		return c.Compile(url)
	}
	return nil, fmt.Errorf("%s has no version %s", file, version)
}

// structural turns a CRD's structural OpenAPI schema into a JSON Schema with
// the API server's strict field validation: an object with declared
// properties rejects others (unless x-kubernetes-preserve-unknown-fields),
// and nullable fields accept null.
func structural(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x)+1)
		for k, val := range x {
			out[k] = structural(val)
		}
		_, hasProps := x["properties"]
		_, hasAdditional := x["additionalProperties"]
		preserve, _ := x["x-kubernetes-preserve-unknown-fields"].(bool)
		if hasProps && !hasAdditional && !preserve {
			out["additionalProperties"] = false
		}
		if nullable, _ := x["nullable"].(bool); nullable {
			if typ, ok := x["type"].(string); ok {
				out["type"] = []any{typ, "null"}
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = structural(x[i])
		}
		return out
	}
	return v
}

func TestRender(t *testing.T) {
	for _, o := range overlays(t) {
		t.Run(o, func(t *testing.T) {
			b := render(t, o)
			if len(b.ids) == 0 {
				t.Fatalf("overlays/%s renders nothing", o)
			}
			seen := map[string]bool{}
			for _, id := range b.ids {
				if seen[id] {
					t.Errorf("overlays/%s renders %s twice", o, id)
				}
				seen[id] = true
			}
			t.Logf("overlays/%s: %d objects", o, len(b.ids))
		})
	}
}

// TestRender_kubectl checks that kubectl's built-in kustomize renders the
// same objects as the Go API, when kubectl is installed.
func TestRender_kubectl(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed; the Go API rendering (TestRender) still ran")
	}
	for _, o := range overlays(t) {
		t.Run(o, func(t *testing.T) {
			out, err := exec.Command(kubectl, "kustomize", filepath.Join("overlays", o)).Output()
			if err != nil {
				t.Fatalf("kubectl kustomize overlays/%s: %v", o, err)
			}
			var got []string
			for doc := range strings.SplitSeq(string(out), "\n---\n") {
				var meta struct {
					Kind     string `json:"kind"`
					Metadata struct{ Name, Namespace string }
				}
				if err := sigsyaml.Unmarshal([]byte(doc), &meta); err != nil {
					t.Fatalf("kubectl output: %v", err)
				}
				got = append(got, fmt.Sprintf("%s %s/%s", meta.Kind, meta.Metadata.Namespace, meta.Metadata.Name))
			}
			want := slices.Clone(render(t, o).ids)
			sort.Strings(got)
			sort.Strings(want)
			if !slices.Equal(got, want) {
				t.Errorf("kubectl kustomize overlays/%s objects:\n%s\nGo API:\n%s", o, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// TestStructural_rejectsUnknownFields proves the CRD validation is strict:
// a misspelled field fails.
func TestStructural_rejectsUnknownFields(t *testing.T) {
	tests := []struct {
		name, crd, apiVersion, yaml string
		wantErr                     bool
	}{
		{"valid ScaledObject", "keda.sh_scaledobjects.yaml", "keda.sh/v1alpha1", `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: w}
spec:
  scaleTargetRef: {name: worker}
  maxReplicaCount: 3
  triggers: [{type: nats-jetstream, metadata: {stream: S}}]
`, false},
		{"misspelled maxReplicaCount", "keda.sh_scaledobjects.yaml", "keda.sh/v1alpha1", `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: w}
spec:
  scaleTargetRef: {name: worker}
  maxReplicas: 3
  triggers: [{type: nats-jetstream, metadata: {stream: S}}]
`, true},
		{"string where an integer belongs", "keda.sh_scaledobjects.yaml", "keda.sh/v1alpha1", `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: w}
spec:
  scaleTargetRef: {name: worker}
  pollingInterval: "15"
  triggers: [{type: nats-jetstream, metadata: {stream: S}}]
`, true},
		{"missing triggers", "keda.sh_scaledobjects.yaml", "keda.sh/v1alpha1", `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: w}
spec:
  scaleTargetRef: {name: worker}
`, true},
		{"unknown rule field", "monitoring.coreos.com_prometheusrules.yaml", "monitoring.coreos.com/v1", `
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: r}
spec:
  groups: [{name: g, rules: [{alert: A, expr: up == 0, severity: page}]}]
`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validateCR(tt.crd, tt.apiVersion, []byte(tt.yaml))
			if (err != nil) != tt.wantErr {
				t.Errorf("validateCR() = %v, want error %t", err, tt.wantErr)
			}
		})
	}
}

func TestStrictDecode_rejectsUnknownFields(t *testing.T) {
	b := &bundle{}
	err := b.decode("apps/v1", "Deployment", []byte(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: w}
spec:
  replica: 2
  selector: {matchLabels: {a: b}}
  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}
`))
	if err == nil {
		t.Error("decode(Deployment with spec.replica) = nil, want an unknown-field error")
	}
}
