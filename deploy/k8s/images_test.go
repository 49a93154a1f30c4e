package k8s_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// imagePin is one entry of a kustomization's images: list.
type imagePin struct {
	Name    string `json:"name"`
	NewName string `json:"newName"`
	NewTag  string `json:"newTag"`
	Digest  string `json:"digest"`
}

// declaredImage answers the product image an overlay declares: the images:
// entry of its own kustomization.yaml, else of the first resource directory
// that declares one (prod-hpa inherits prod's).
func declaredImage(t *testing.T, dir string) (imagePin, bool) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return imagePin{}, false
	}
	var k struct {
		Resources []string   `json:"resources"`
		Images    []imagePin `json:"images"`
	}
	if err := sigsyaml.Unmarshal(raw, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	for _, im := range k.Images {
		if im.Name == productImage {
			return im, true
		}
	}
	for _, r := range k.Resources {
		if st, err := os.Stat(filepath.Join(dir, r)); err == nil && st.IsDir() {
			if im, ok := declaredImage(t, filepath.Join(dir, r)); ok {
				return im, true
			}
		}
	}
	return imagePin{}, false
}

// productImage is the image name the base's manifests use; overlays pin it.
const productImage = "orderworker"

// imageTag answers an image reference's tag ("" when none); a digest
// counts as the tag.
func imageTag(ref string) string {
	if _, d, ok := strings.Cut(ref, "@"); ok {
		return "@" + d
	}
	slash := strings.LastIndex(ref, "/")
	if i := strings.LastIndex(ref, ":"); i > slash {
		return ref[i+1:]
	}
	return ""
}

// TestImages: every container that runs one of the product's commands
// carries exactly the image and tag its overlay declares, every other
// container an explicit tag, and no production overlay runs "latest" or
// an untagged image. The base declares no image of its own, so an
// overlay's pin is the only one that applies.
func TestImages(t *testing.T) {
	for _, o := range overlays(t) {
		t.Run(o, func(t *testing.T) {
			pin, ok := declaredImage(t, filepath.Join("overlays", o))
			if !ok {
				t.Fatalf("overlays/%s declares no images: entry for %s", o, productImage)
			}
			want := pin.NewName + ":" + pin.NewTag
			if pin.Digest != "" {
				want = pin.NewName + "@" + pin.Digest
			}
			prod := strings.HasPrefix(o, "prod")
			b := render(t, o)
			var checked int
			check := func(kind, name string, spec *corev1.PodSpec) {
				cs := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
				for _, c := range cs {
					checked++
					where := kind + " " + name + " container " + c.Name
					tag := imageTag(c.Image)
					runsOurs := len(c.Command) > 0 && strings.HasPrefix(c.Command[0], binDir)
					switch {
					case runsOurs && c.Image != want:
						t.Errorf("%s: image %q, want the overlay's %q", where, c.Image, want)
					case c.Image == productImage:
						t.Errorf("%s: image %q was not pinned by the overlay's images: entry", where, c.Image)
					case tag == "":
						t.Errorf("%s: image %q has no tag", where, c.Image)
					case prod && tag == "latest":
						t.Errorf("%s: image %q: production never runs latest", where, c.Image)
					}
					if prod && c.ImagePullPolicy == corev1.PullNever {
						t.Errorf("%s: imagePullPolicy Never in production", where)
					}
				}
			}
			for _, d := range b.deployments {
				check("Deployment", d.Name, &d.Spec.Template.Spec)
			}
			for _, s := range b.statefulSets {
				check("StatefulSet", s.Name, &s.Spec.Template.Spec)
			}
			if checked == 0 {
				t.Fatal("no container rendered")
			}
			t.Logf("overlays/%s: %d containers, product image %s", o, checked, want)
		})
	}
}
