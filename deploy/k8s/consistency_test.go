package k8s_test

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/wxcombine/orderworker/events"
	"github.com/wxcombine/orderworker/metrics"
	"github.com/wxcombine/orderworker/notifier"
)

// runtimeEnv are variables the Go runtime reads, allowed besides the
// services' own.
var runtimeEnv = map[string]bool{"GOMEMLIMIT": true, "GOMAXPROCS": true, "GOGC": true, "GODEBUG": true, "TZ": true}

// binDir is where the image puts the commands (Dockerfile).
const binDir = "/usr/local/bin/"

// drainMargin is what terminationGracePeriodSeconds must leave beyond the
// service's own drain budget: the final acks, the NATS drain, the process
// exit.
const drainMargin = 5 * time.Second

// podOf is one of our containers in its pod template.
type podOf struct {
	kind, name string // owner
	spec       *corev1.PodSpec
	labels     map[string]string
	c          *corev1.Container
	cmd        *command
	vars       map[string]string // set by the manifest
}

// effective answers a variable's value: the manifest's, else the code's
// default.
func (p *podOf) effective(k string) string {
	if v, ok := p.vars[k]; ok {
		return v
	}
	return p.cmd.env[k]
}

func (p *podOf) where() string {
	return fmt.Sprintf("%s %s container %s (cmd/%s)", p.kind, p.name, p.c.Name, p.cmd.name)
}

// ours answers every container of the bundle that runs one of the image's
// commands, with the variables the manifests set for it.
func ours(t *testing.T, b *bundle) []*podOf {
	t.Helper()
	bins := imageCommands(t)
	var out []*podOf
	add := func(kind, name string, tpl *corev1.PodTemplateSpec) {
		for i := range tpl.Spec.Containers {
			c := &tpl.Spec.Containers[i]
			if len(c.Command) == 0 || !strings.HasPrefix(c.Command[0], binDir) {
				continue
			}
			bin := strings.TrimPrefix(c.Command[0], binDir)
			if !bins[bin] {
				t.Errorf("%s %s runs %s, which deploy/image/build.sh does not build", kind, name, c.Command[0])
				continue
			}
			p := &podOf{kind: kind, name: name, spec: &tpl.Spec, labels: tpl.Labels, c: c, cmd: loadCommand(t, bin), vars: map[string]string{}}
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef == nil {
					t.Errorf("%s: envFrom other than a ConfigMap", p.where())
					continue
				}
				cm := findConfigMap(b, ef.ConfigMapRef.Name)
				if cm == nil {
					t.Errorf("%s: ConfigMap %s is not in the overlay", p.where(), ef.ConfigMapRef.Name)
					continue
				}
				for k, v := range cm.Data {
					p.vars[ef.Prefix+k] = v
				}
			}
			for _, e := range c.Env {
				p.vars[e.Name] = e.Value
			}
			out = append(out, p)
		}
	}
	for _, d := range b.deployments {
		add("Deployment", d.Name, &d.Spec.Template)
	}
	for _, s := range b.statefulSets {
		add("StatefulSet", s.Name, &s.Spec.Template)
	}
	return out
}

func findConfigMap(b *bundle, name string) *corev1.ConfigMap {
	for _, cm := range b.configMaps {
		if cm.Name == name {
			return cm
		}
	}
	return nil
}

func findSecret(b *bundle, name string) *corev1.Secret {
	for _, s := range b.secrets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// port answers the port of a listen address such as ":8081".
func port(t *testing.T, addr string) int32 {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	n, err := strconv.Atoi(addr[i+1:])
	if i < 0 || err != nil {
		t.Errorf("listen address %q has no port", addr)
		return 0
	}
	return int32(n)
}

func containerPort(c *corev1.Container, name string) (int32, bool) {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

func TestManifests_matchCode(t *testing.T) {
	for _, o := range overlays(t) {
		t.Run(o, func(t *testing.T) {
			b := render(t, o)
			pods := ours(t, b)
			var cmds []string
			for _, p := range pods {
				cmds = append(cmds, p.cmd.name)
			}
			for _, want := range []string{"worker", "notifier"} {
				if !slices.Contains(cmds, want) {
					t.Errorf("overlays/%s runs no %s", o, want)
				}
			}
			for _, p := range pods {
				checkEnv(t, p)
				checkPorts(t, p)
				checkSecurity(t, p)
				checkResources(t, p)
				checkMerchantFiles(t, b, p)
				checkFilePaths(t, b, p)
				checkGrace(t, p)
			}
		})
	}
}

// checkEnv: every variable the manifests set is one the command reads.
func checkEnv(t *testing.T, p *podOf) {
	for _, k := range keys(p.vars) {
		if _, ok := p.cmd.env[k]; !ok && !runtimeEnv[k] {
			t.Errorf("%s: sets %s, which cmd/%s does not read (it reads %s)", p.where(), k, p.cmd.name, strings.Join(keys(p.cmd.env), ", "))
		}
	}
}

// checkPorts: the admin (and http) ports are the ones the command listens
// on; probes use the admin port and paths the code serves.
func checkPorts(t *testing.T, p *podOf) {
	named := map[string]string{"admin": "ADMIN_ADDR", "http": "HTTP_ADDR"}
	for name, env := range named {
		if _, reads := p.cmd.env[env]; !reads {
			continue
		}
		addr := p.effective(env)
		if addr == "" {
			t.Errorf("%s: %s has no default and is not set", p.where(), env)
			continue
		}
		got, ok := containerPort(p.c, name)
		if !ok {
			t.Errorf("%s: no container port named %q for %s", p.where(), name, env)
			continue
		}
		if want := port(t, addr); got != want {
			t.Errorf("%s: container port %s = %d, want %d (%s=%s)", p.where(), name, got, want, env, addr)
		}
		// The code's defaults listen on loopback only; in a pod the kubelet,
		// Prometheus and the Service need every interface, so the manifest
		// must say so.
		if host, _, _ := strings.Cut(addr, ":"); host == "127.0.0.1" || host == "localhost" || host == "[::1]" {
			t.Errorf("%s: %s=%s listens on loopback only; probes and scrapes cannot reach it", p.where(), env, addr)
		}
	}
	for _, a := range p.c.Args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && !strings.Contains(p.cmd.source, `"`+name+`"`) {
			t.Errorf("%s: argument %s names no flag of cmd/%s", p.where(), a, p.cmd.name)
		}
	}
	if _, reads := p.cmd.env["ADMIN_ADDR"]; !reads {
		// No admin port (the simulator): any probe will do, but one is needed.
		if p.c.LivenessProbe == nil || p.c.ReadinessProbe == nil {
			t.Errorf("%s: liveness and readiness probes are required", p.where())
		}
		return
	}
	adminPort, _ := containerPort(p.c, "admin")
	probes := map[string]*corev1.Probe{"liveness": p.c.LivenessProbe, "readiness": p.c.ReadinessProbe, "startup": p.c.StartupProbe}
	for kind, pr := range probes {
		if pr == nil {
			if kind != "startup" {
				t.Errorf("%s: no %s probe", p.where(), kind)
			}
			continue
		}
		if pr.HTTPGet == nil {
			t.Errorf("%s: %s probe is not an HTTP GET", p.where(), kind)
			continue
		}
		pp := pr.HTTPGet.Port
		onAdmin := (pp.Type == intstr.String && pp.StrVal == "admin") || (pp.Type == intstr.Int && pp.IntVal == adminPort)
		if !onAdmin {
			t.Errorf("%s: %s probe on port %s, want the admin port", p.where(), kind, pp.String())
		}
		path := pr.HTTPGet.Path
		if !strings.Contains(p.cmd.source, path+`"`) {
			t.Errorf("%s: %s probe path %s is served nowhere in cmd/%s or the packages it imports", p.where(), kind, path, p.cmd.name)
		}
	}
	if p.c.ReadinessProbe != nil && p.c.ReadinessProbe.HTTPGet != nil && p.c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("%s: readiness probe path %s, want /readyz (NATS and store checks)", p.where(), p.c.ReadinessProbe.HTTPGet.Path)
	}
}

func checkSecurity(t *testing.T, p *podOf) {
	psc := p.spec.SecurityContext
	sc := p.c.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", p.where())
		return
	}
	nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
	seccomp := (sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault) ||
		(psc != nil && psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault)
	switch {
	case !nonRoot:
		t.Errorf("%s: runAsNonRoot is not true", p.where())
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("%s: readOnlyRootFilesystem is not true", p.where())
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("%s: allowPrivilegeEscalation is not false", p.where())
	case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
		t.Errorf("%s: capabilities must drop ALL and add none", p.where())
	case !seccomp:
		t.Errorf("%s: seccomp profile is not RuntimeDefault", p.where())
	}
	if p.spec.AutomountServiceAccountToken == nil || *p.spec.AutomountServiceAccountToken {
		t.Errorf("%s: the service account token is mounted; the services never call the API server", p.where())
	}
	if len(p.spec.TopologySpreadConstraints) == 0 && (p.spec.Affinity == nil || p.spec.Affinity.PodAntiAffinity == nil) {
		t.Errorf("%s: no topology spread or anti-affinity", p.where())
	}
	var zone, host bool
	for _, tsc := range p.spec.TopologySpreadConstraints {
		zone = zone || tsc.TopologyKey == corev1.LabelTopologyZone
		host = host || tsc.TopologyKey == corev1.LabelHostname
	}
	if !zone || !host {
		t.Errorf("%s: topology spread must cover zones and nodes (zone %t, node %t)", p.where(), zone, host)
	}
}

func checkResources(t *testing.T, p *podOf) {
	r := p.c.Resources
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := r.Requests[name]
		lim, okLim := r.Limits[name]
		if !okReq || !okLim {
			t.Errorf("%s: %s request and limit must both be set", p.where(), name)
			continue
		}
		if req.Cmp(lim) > 0 {
			t.Errorf("%s: %s request %s above limit %s", p.where(), name, req.String(), lim.String())
		}
	}
	if v, ok := p.vars["GOMEMLIMIT"]; ok {
		lim, okLim := r.Limits[corev1.ResourceMemory]
		// Go's units (MiB, GiB) are Kubernetes' (Mi, Gi) with a "B".
		q, err := resource.ParseQuantity(strings.TrimSuffix(v, "B"))
		switch {
		case err != nil:
			t.Errorf("%s: GOMEMLIMIT %q is not a size", p.where(), v)
		case okLim && q.Cmp(lim) >= 0:
			t.Errorf("%s: GOMEMLIMIT %s must stay below the memory limit %s", p.where(), v, lim.String())
		}
	}
}

// mountedFile is a file the pod sees under a mount: where it comes from.
type mountedFile struct {
	secret, key string // source
}

// volumeFiles answers, for a volume backed by Secrets (secret or projected),
// the files it shows by relative path, and whether it lists them all (items
// everywhere, or a Secret rendered in the overlay).
func volumeFiles(b *bundle, v *corev1.Volume) (map[string]mountedFile, bool) {
	files := map[string]mountedFile{}
	complete := true
	addSecret := func(name string, items []corev1.KeyToPath) {
		if len(items) > 0 {
			for _, it := range items {
				files[it.Path] = mountedFile{name, it.Key}
			}
			return
		}
		if s := findSecret(b, name); s != nil {
			for k := range s.Data {
				files[k] = mountedFile{name, k}
			}
			for k := range s.StringData {
				files[k] = mountedFile{name, k}
			}
			return
		}
		complete = false
	}
	switch {
	case v.Secret != nil:
		addSecret(v.Secret.SecretName, v.Secret.Items)
	case v.Projected != nil:
		for _, src := range v.Projected.Sources {
			if src.Secret != nil {
				addSecret(src.Secret.Name, src.Secret.Items)
			} else {
				complete = false
			}
		}
	default:
		return nil, false
	}
	return files, complete
}

func volumeByName(spec *corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

// checkMerchantFiles: the merchant credentials are mounted where the command
// reads them (WECHAT_MERCHANT_DIR/<mchid>/<file>), with the files it needs
// and none it does not read.
func checkMerchantFiles(t *testing.T, b *bundle, p *podOf) {
	if _, reads := p.cmd.env["WECHAT_MERCHANT_DIR"]; !reads {
		return
	}
	dir := p.effective("WECHAT_MERCHANT_DIR")
	var vol *corev1.Volume
	for _, m := range p.c.VolumeMounts {
		if path.Clean(m.MountPath) == path.Clean(dir) {
			vol = volumeByName(p.spec, m.Name)
			if !m.ReadOnly {
				t.Errorf("%s: merchant credentials mounted read-write", p.where())
			}
			if m.SubPath != "" {
				t.Errorf("%s: merchant credentials mounted with subPath never see a rotated Secret", p.where())
			}
		}
	}
	if vol == nil {
		t.Errorf("%s: nothing is mounted at WECHAT_MERCHANT_DIR %s", p.where(), dir)
		return
	}
	files, complete := volumeFiles(b, vol)
	if files == nil || !complete {
		t.Errorf("%s: volume %s at %s must be Secrets with listed items (or Secrets of the overlay)", p.where(), vol.Name, dir)
		return
	}
	c := p.cmd.consts
	known := map[string]bool{}
	for _, k := range []string{"fileMerchantKey", "fileAPIv3Key", "fileSerial", "filePublicKey", "filePublicKeyID"} {
		if v, ok := c[k]; ok {
			known[v] = true
		}
	}
	glob := c["globPlatformCert"]
	byMerchant := map[string][]string{}
	for rel := range files {
		mch, file, ok := strings.Cut(rel, "/")
		if !ok || strings.Contains(file, "/") {
			t.Errorf("%s: %s/%s is not <mchid>/<file>", p.where(), dir, rel)
			continue
		}
		isCert, _ := filepath.Match(glob, file)
		if !known[file] && (glob == "" || !isCert) {
			t.Errorf("%s: %s/%s is not a file cmd/%s reads (it reads %s and %s)", p.where(), dir, rel, p.cmd.name, strings.Join(keys(known), ", "), glob)
		}
		byMerchant[mch] = append(byMerchant[mch], file)
	}
	var want []string
	for _, id := range strings.Split(p.effective("WECHAT_MERCHANTS"), ",") {
		if id = strings.TrimSpace(id); id != "" {
			want = append(want, id)
		}
	}
	if len(want) == 0 {
		want = keys(byMerchant)
	}
	if len(want) == 0 {
		t.Errorf("%s: no merchant configured or mounted", p.where())
	}
	for _, id := range want {
		fs := byMerchant[id]
		for _, req := range []string{"fileMerchantKey", "fileAPIv3Key", "fileSerial"} {
			if v, ok := c[req]; ok && !slices.Contains(fs, v) {
				t.Errorf("%s: merchant %s lacks %s", p.where(), id, v)
			}
		}
		hasPub := c["filePublicKey"] != "" && slices.Contains(fs, c["filePublicKey"])
		if hasPub && !slices.Contains(fs, c["filePublicKeyID"]) {
			t.Errorf("%s: merchant %s has %s without %s", p.where(), id, c["filePublicKey"], c["filePublicKeyID"])
		}
		hasCert := slices.ContainsFunc(fs, func(f string) bool { ok, _ := filepath.Match(glob, f); return ok })
		if !hasPub && !hasCert {
			t.Errorf("%s: merchant %s has neither %s nor %s", p.where(), id, c["filePublicKey"], glob)
		}
	}
	for id := range byMerchant {
		if !slices.Contains(want, id) {
			t.Errorf("%s: credentials of merchant %s are mounted but WECHAT_MERCHANTS does not list it", p.where(), id)
		}
	}
}

// checkFilePaths: every *_FILE variable names a file inside a mounted
// volume, and inside a Secret volume with listed items, one of its items.
func checkFilePaths(t *testing.T, b *bundle, p *podOf) {
	for _, k := range keys(p.vars) {
		if !strings.HasSuffix(k, "_FILE") || p.vars[k] == "" {
			continue
		}
		f := p.vars[k]
		var found bool
		for _, m := range p.c.VolumeMounts {
			rel, err := filepath.Rel(m.MountPath, f)
			if err != nil || strings.HasPrefix(rel, "..") {
				continue
			}
			found = true
			v := volumeByName(p.spec, m.Name)
			if v == nil {
				t.Errorf("%s: mount %s names no volume", p.where(), m.Name)
				continue
			}
			if files, complete := volumeFiles(b, v); complete && files != nil {
				if _, ok := files[rel]; !ok {
					t.Errorf("%s: %s=%s, but volume %s holds %s", p.where(), k, f, v.Name, strings.Join(keys(files), ", "))
				}
			}
		}
		if !found {
			t.Errorf("%s: %s=%s is under no volume mount", p.where(), k, f)
		}
	}
}

// checkGrace: SIGKILL never cuts the drain short.
func checkGrace(t *testing.T, p *podOf) {
	budget := time.Duration(0)
	for _, k := range []string{"SHUTDOWN_GRACE", "SHUTDOWN_TIMEOUT"} {
		if _, reads := p.cmd.env[k]; !reads {
			continue
		}
		v := p.effective(k)
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Errorf("%s: %s=%q is not a duration, or its default is not a constant: set it in the ConfigMap", p.where(), k, v)
			continue
		}
		budget = max(budget, d)
	}
	if budget == 0 {
		return
	}
	if p.c.Lifecycle != nil && p.c.Lifecycle.PreStop != nil && p.c.Lifecycle.PreStop.Sleep != nil {
		budget += time.Duration(p.c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	tgps := time.Duration(30) * time.Second
	if p.spec.TerminationGracePeriodSeconds != nil {
		tgps = time.Duration(*p.spec.TerminationGracePeriodSeconds) * time.Second
	}
	if tgps < budget+drainMargin {
		t.Errorf("%s: terminationGracePeriodSeconds %s, want at least the drain budget %s + %s", p.where(), tgps, budget, drainMargin)
	}
}

func TestManifests_wiring(t *testing.T) {
	for _, o := range overlays(t) {
		t.Run(o, func(t *testing.T) {
			b := render(t, o)
			type pod struct {
				owner  string
				labels map[string]string
				ports  map[string]int32
			}
			var pods []pod
			addPod := func(owner string, tpl *corev1.PodTemplateSpec) {
				pp := map[string]int32{}
				for _, c := range tpl.Spec.Containers {
					for _, cp := range c.Ports {
						pp[cp.Name] = cp.ContainerPort
					}
				}
				pods = append(pods, pod{owner, tpl.Labels, pp})
			}
			for _, d := range b.deployments {
				if d.Spec.Selector == nil || !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
					t.Errorf("Deployment %s: selector does not match its template", d.Name)
				}
				addPod("Deployment "+d.Name, &d.Spec.Template)
			}
			for _, s := range b.statefulSets {
				if s.Spec.Selector == nil || !selects(s.Spec.Selector.MatchLabels, s.Spec.Template.Labels) {
					t.Errorf("StatefulSet %s: selector does not match its template", s.Name)
				}
				addPod("StatefulSet "+s.Name, &s.Spec.Template)
			}
			selected := func(sel map[string]string) []pod {
				var out []pod
				for _, p := range pods {
					if selects(sel, p.labels) {
						out = append(out, p)
					}
				}
				return out
			}
			for _, s := range b.services {
				ps := selected(s.Spec.Selector)
				if len(ps) == 0 {
					t.Errorf("Service %s selects no pod", s.Name)
				}
				for _, sp := range s.Spec.Ports {
					if sp.TargetPort.Type != intstr.String {
						continue
					}
					for _, p := range ps {
						if _, ok := p.ports[sp.TargetPort.StrVal]; !ok {
							t.Errorf("Service %s: target port %q not on %s", s.Name, sp.TargetPort.StrVal, p.owner)
						}
					}
				}
			}
			for _, pdb := range b.pdbs {
				if pdb.Spec.Selector == nil || len(selected(pdb.Spec.Selector.MatchLabels)) == 0 {
					t.Errorf("PodDisruptionBudget %s selects no pod", pdb.Name)
				}
			}
			for _, np := range b.networkPolicies {
				ps := selected(np.Spec.PodSelector.MatchLabels)
				if len(np.Spec.PodSelector.MatchLabels) == 0 && len(np.Spec.PodSelector.MatchExpressions) == 0 {
					ps = pods // an empty selector selects every pod of the namespace
				}
				if len(ps) == 0 {
					t.Errorf("NetworkPolicy %s selects no pod", np.Name)
				}
				for _, rule := range np.Spec.Ingress {
					for _, npp := range rule.Ports {
						if npp.Port == nil || npp.Port.Type != intstr.String {
							continue
						}
						for _, p := range ps {
							if _, ok := p.ports[npp.Port.StrVal]; !ok {
								t.Errorf("NetworkPolicy %s: port %q not on %s", np.Name, npp.Port.StrVal, p.owner)
							}
						}
					}
				}
			}
			for _, ing := range b.ingresses {
				checkIngress(t, b, ing.Name, ing.Spec.TLS, ing.Spec.Rules)
			}
			for _, sm := range b.serviceMonitors {
				var n int
				for _, s := range b.services {
					if !sm.Spec.Selector.matches(s.Labels) {
						continue
					}
					n++
					for _, ep := range sm.Spec.Endpoints {
						if !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Name == ep.Port }) {
							t.Errorf("ServiceMonitor %s: Service %s has no port %q", sm.Metadata.Name, s.Name, ep.Port)
						}
					}
				}
				if n == 0 {
					t.Errorf("ServiceMonitor %s selects no Service", sm.Metadata.Name)
				}
				for _, ep := range sm.Spec.Endpoints {
					for _, name := range []string{"worker", "notifier"} {
						if !strings.Contains(loadCommand(t, name).source, ep.Path+`"`) {
							t.Errorf("ServiceMonitor %s: path %s is not served by cmd/%s", sm.Metadata.Name, ep.Path, name)
						}
					}
				}
			}
		})
	}
}

func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

type (
	networkingTLS  = networkingv1.IngressTLS
	networkingRule = networkingv1.IngressRule
)

func checkIngress(t *testing.T, b *bundle, name string, tls []networkingTLS, rules []networkingRule) {
	if len(tls) == 0 {
		t.Errorf("Ingress %s: no TLS (WeChat Pay notifies over HTTPS only)", name)
	}
	var tlsHosts []string
	for _, x := range tls {
		tlsHosts = append(tlsHosts, x.Hosts...)
	}
	for _, r := range rules {
		if !slices.Contains(tlsHosts, r.Host) {
			t.Errorf("Ingress %s: host %q has no TLS certificate", name, r.Host)
		}
		if r.HTTP == nil {
			continue
		}
		for _, p := range r.HTTP.Paths {
			if p.Path != notifier.PathPrefix {
				t.Errorf("Ingress %s: path %s, want the notifier's %s", name, p.Path, notifier.PathPrefix)
			}
			svc := p.Backend.Service
			if svc == nil {
				t.Errorf("Ingress %s: path %s has no Service backend", name, p.Path)
				continue
			}
			var found bool
			for _, s := range b.services {
				if s.Name != svc.Name {
					continue
				}
				found = true
				if !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool {
					return (svc.Port.Name != "" && sp.Name == svc.Port.Name) || (svc.Port.Number != 0 && sp.Port == svc.Port.Number)
				}) {
					t.Errorf("Ingress %s: Service %s has no port %+v", name, s.Name, svc.Port)
				}
			}
			if !found {
				t.Errorf("Ingress %s: Service %s is not in the overlay", name, svc.Name)
			}
		}
	}
}

// workerOf answers the worker container of an overlay.
func workerOf(t *testing.T, b *bundle) (*podOf, *appsv1.Deployment) {
	t.Helper()
	for _, p := range ours(t, b) {
		if p.cmd.name == "worker" && p.kind == "Deployment" {
			for _, d := range b.deployments {
				if d.Name == p.name {
					return p, d
				}
			}
		}
	}
	t.Fatalf("overlays/%s has no worker Deployment", b.overlay)
	return nil, nil
}

func atoi(t *testing.T, what, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s = %q, not an integer", what, s)
	}
	return n
}

// kedaTriggerKeys reads the nats-jetstream trigger's metadata names from
// KEDA's scaler source (testdata/crds/keda_nats_jetstream_scaler.go.txt).
func kedaTriggerKeys(t *testing.T) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "crds", "keda_nats_jetstream_scaler.go.txt"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`keda:"name=([A-Za-z]+),[^"]*order=([a-zA-Z;]+)`).FindAllStringSubmatch(string(raw), -1) {
		if strings.Contains(m[2], "triggerMetadata") {
			out[m[1]] = true
		}
	}
	if len(out) < 5 {
		t.Fatalf("read only %d trigger keys from KEDA's scaler source", len(out))
	}
	return out
}

// TestScaling: one autoscaler per Deployment, the KEDA trigger on the
// worker's real stream and consumer, and the arithmetic
// ceil(max replicas × (1 + maxSurge)) × WORKER_IN_FLIGHT ≤ MAX_ACK_PENDING.
func TestScaling(t *testing.T) {
	triggerKeys := kedaTriggerKeys(t)
	for _, o := range overlays(t) {
		t.Run(o, func(t *testing.T) {
			b := render(t, o)
			w, d := workerOf(t, b)
			inFlight := atoi(t, "WORKER_IN_FLIGHT", w.effective("WORKER_IN_FLIGHT"))
			maxAckPending := atoi(t, "MAX_ACK_PENDING", w.effective("MAX_ACK_PENDING"))
			consumer := w.effective("CONSUMER_NAME")
			surge := 0.25
			if ru := d.Spec.Strategy.RollingUpdate; ru != nil && ru.MaxSurge != nil {
				if ru.MaxSurge.Type == intstr.String {
					pct, err := strconv.Atoi(strings.TrimSuffix(ru.MaxSurge.StrVal, "%"))
					if err != nil {
						t.Fatalf("maxSurge %q", ru.MaxSurge.StrVal)
					}
					surge = float64(pct) / 100
				} else {
					surge = -1 // absolute: added below
				}
			}
			withSurge := func(n int32) int {
				if surge < 0 {
					return int(n) + d.Spec.Strategy.RollingUpdate.MaxSurge.IntValue()
				}
				return int(math.Ceil(float64(n) * (1 + surge)))
			}
			autoscalers := 0
			var maxReplicas int32
			for _, h := range b.hpas {
				if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != d.Name {
					continue
				}
				autoscalers++
				maxReplicas = h.Spec.MaxReplicas
				if h.Spec.Behavior == nil || h.Spec.Behavior.ScaleDown == nil || h.Spec.Behavior.ScaleDown.StabilizationWindowSeconds == nil {
					t.Errorf("HPA %s: no scale-down stabilization window", h.Name)
				}
				if h.Spec.MinReplicas != nil && *h.Spec.MinReplicas > h.Spec.MaxReplicas {
					t.Errorf("HPA %s: minReplicas above maxReplicas", h.Name)
				}
			}
			for _, so := range b.scaledObjects {
				if so.Spec.ScaleTargetRef.Name != d.Name {
					continue
				}
				autoscalers++
				if so.Spec.MaxReplicaCount == nil || so.Spec.MinReplicaCount == nil {
					t.Fatalf("ScaledObject %s: set minReplicaCount and maxReplicaCount", so.Metadata.Name)
				}
				maxReplicas = *so.Spec.MaxReplicaCount
				if *so.Spec.MinReplicaCount < 1 {
					t.Errorf("ScaledObject %s: minReplicaCount %d; keep at least one worker (jobs must not wait for activation)", so.Metadata.Name, *so.Spec.MinReplicaCount)
				}
				adv := so.Spec.Advanced
				if adv == nil || adv.HorizontalPodAutoscalerConfig == nil || adv.HorizontalPodAutoscalerConfig.Behavior == nil ||
					adv.HorizontalPodAutoscalerConfig.Behavior.ScaleDown == nil || adv.HorizontalPodAutoscalerConfig.Behavior.ScaleDown.StabilizationWindowSeconds == nil {
					t.Errorf("ScaledObject %s: no advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds", so.Metadata.Name)
				}
				var nats int
				for _, tr := range so.Spec.Triggers {
					if tr.Type != "nats-jetstream" {
						continue
					}
					nats++
					for k := range tr.Metadata {
						if !triggerKeys[k] {
							t.Errorf("ScaledObject %s: trigger metadata %q is not a nats-jetstream parameter (%s)", so.Metadata.Name, k, strings.Join(keys(triggerKeys), ", "))
						}
					}
					want := map[string]string{"stream": events.StreamJobs, "consumer": consumer}
					for k, v := range want {
						if tr.Metadata[k] != v {
							t.Errorf("ScaledObject %s: trigger %s = %q, want %q (the worker's)", so.Metadata.Name, k, tr.Metadata[k], v)
						}
					}
					ep := tr.Metadata["natsServerMonitoringEndpoint"]
					if _, p, ok := strings.Cut(ep, ":"); !ok || strings.Contains(ep, "://") || p == "" {
						t.Errorf("ScaledObject %s: natsServerMonitoringEndpoint %q must be host:port (no scheme)", so.Metadata.Name, ep)
					}
					if lag, err := strconv.Atoi(tr.Metadata["lagThreshold"]); err != nil || lag < 1 {
						t.Errorf("ScaledObject %s: lagThreshold %q is not a positive integer", so.Metadata.Name, tr.Metadata["lagThreshold"])
					} else if lag > inFlight {
						t.Errorf("ScaledObject %s: lagThreshold %d > WORKER_IN_FLIGHT %d: a pod cannot hold its share of the lag, so a backlog grows before the deployment does",
							so.Metadata.Name, lag, inFlight)
					}
				}
				if nats == 0 {
					t.Errorf("ScaledObject %s: no nats-jetstream trigger", so.Metadata.Name)
				}
			}
			switch autoscalers {
			case 0:
				if d.Spec.Replicas == nil {
					t.Errorf("worker Deployment: no autoscaler and no replicas")
				} else {
					maxReplicas = *d.Spec.Replicas
				}
			case 1:
				if d.Spec.Replicas != nil {
					t.Errorf("worker Deployment sets replicas %d although an autoscaler owns the count", *d.Spec.Replicas)
				}
			default:
				t.Fatalf("worker Deployment has %d autoscalers (KEDA and HPA together fight over it)", autoscalers)
			}
			peak := withSurge(maxReplicas)
			if peak*inFlight > maxAckPending {
				t.Fatalf("%d pods at peak (max %d + surge) × WORKER_IN_FLIGHT %d = %d > MAX_ACK_PENDING %d: pods beyond the cap sit idle",
					peak, maxReplicas, inFlight, peak*inFlight, maxAckPending)
			}
			t.Logf("overlays/%s: %d pods at peak × %d in flight = %d ≤ max_ack_pending %d", o, peak, inFlight, peak*inFlight, maxAckPending)
		})
	}
}

// metricSet answers every metric the services register, with its label
// names, from the metrics package's own descriptors.
func metricSet(t *testing.T) map[string][]string {
	t.Helper()
	rec := &recorder{names: map[string][]string{}}
	// Every collector the worker and the notifier register (cmd/worker,
	// cmd/notifier): each must be on a dashboard panel.
	metrics.NewWorker(rec)
	metrics.NewReconcile(rec)
	metrics.NewPaymentAnomalies(rec)
	metrics.NewConcurrencyLimit(rec)
	metrics.NewNotifier(&recorder{names: rec.names})
	if len(rec.names) == 0 {
		t.Fatal("metrics registered nothing")
	}
	return rec.names
}

// recorder is a prometheus.Registerer that records descriptors.
type recorder struct{ names map[string][]string }

var descRe = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		m := descRe.FindStringSubmatch(d.String())
		if m == nil {
			continue
		}
		var labels []string
		for l := range strings.SplitSeq(m[2], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
		r.names[m[1]] = labels
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *recorder) Unregister(prometheus.Collector) bool { return false }

var selectorRe = regexp.MustCompile(`\b((?:orderworker|jetstream)_[a-z0-9_]+)(\{[^}]*\})?`)
var matcherRe = regexp.MustCompile(`([a-z_]+)\s*(=~|!=|!~|=)\s*"([^"]*)"`)

// labelValues maps metric → label → every value the code exports for it.
type labelValues map[string]map[string]map[string]bool

// checkExpr checks a PromQL expression's product metrics: each exists, its
// label names are the metric's, and each = or =~ value is one the code
// exports for that very metric and label (values); the NATS exporter's
// consumer metrics name the worker's stream and consumer and keep only the
// consumer leader's series (is_consumer_leader="true": every replica
// reports the consumer, so a sum over all of them over-counts on a cluster).
func checkExpr(t *testing.T, where, expr string, known map[string][]string, values labelValues, consumer string) {
	for _, m := range selectorRe.FindAllStringSubmatch(expr, -1) {
		name := m[1]
		if strings.HasPrefix(name, "jetstream_") {
			leader := false
			for _, mm := range matcherRe.FindAllStringSubmatch(m[2], -1) {
				switch mm[1] {
				case "stream_name":
					if mm[3] != events.StreamJobs {
						t.Errorf("%s: stream_name %q, want %s", where, mm[3], events.StreamJobs)
					}
				case "consumer_name":
					if consumer != "" && mm[3] != consumer {
						t.Errorf("%s: consumer_name %q, want the worker's %s", where, mm[3], consumer)
					}
				case "is_consumer_leader":
					leader = mm[2] == "=" && mm[3] == "true"
				}
			}
			if strings.HasPrefix(name, "jetstream_consumer_") && !leader {
				t.Errorf("%s: %s%s does not select is_consumer_leader=\"true\"", where, name, m[2])
			}
			continue
		}
		base := name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if _, ok := known[base]; !ok {
				base = strings.TrimSuffix(base, suf)
			}
		}
		labels, ok := known[base]
		if !ok {
			t.Errorf("%s: metric %s is not registered by package metrics", where, name)
			continue
		}
		for _, mm := range matcherRe.FindAllStringSubmatch(m[2], -1) {
			label, op, val := mm[1], mm[2], mm[3]
			histogramLE := label == "le" && base != name
			if !slices.Contains(labels, label) && !histogramLE && label != "namespace" && label != "job" {
				t.Errorf("%s: %s has no label %s (it has %v)", where, base, label, labels)
				continue
			}
			if label == "le" || label == "namespace" || label == "job" {
				continue
			}
			emitted := values[base][label]
			if len(emitted) == 0 && (op == "!=" || op == "!~") {
				continue // excluding a value of an open set (WeChat codes) selects what remains
			}
			if len(emitted) == 0 {
				t.Errorf("%s: %s{%s%s%q}: the code pre-initialises no value of %s, so the matcher cannot be checked", where, base, label, op, val, label)
				continue
			}
			for alt := range strings.SplitSeq(val, "|") {
				if !emitted[alt] {
					t.Errorf("%s: %s{%s%s%q}: %q is not a value the code exports for %s (it exports %v)", where, base, label, op, val, alt, label, keys(emitted))
				}
			}
		}
	}
}

// metricValues answers every label value the services export, read from a
// live registry: the collectors as cmd/worker and cmd/notifier build them
// (dead-letter reasons from events.Reasons, a merchant), gathered before
// anything happened. Because every fixed label set is pre-initialised, this
// is the set the code emits, not a copied list.
func metricValues(t *testing.T) labelValues {
	t.Helper()
	reasons := make([]string, len(events.Reasons))
	for i, r := range events.Reasons {
		reasons[i] = string(r)
	}
	wreg, nreg := prometheus.NewRegistry(), prometheus.NewRegistry()
	metrics.NewWorkerWith(wreg, metrics.WorkerConfig{DeadLetterReasons: reasons, Merchants: []string{"1900000109"}})
	metrics.NewReconcile(wreg)
	metrics.NewPaymentAnomalies(wreg)
	metrics.NewConcurrencyLimit(wreg)
	metrics.NewNotifier(nreg)
	out := labelValues{}
	for _, g := range []prometheus.Gatherer{wreg, nreg} {
		mfs, err := g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if out[mf.GetName()] == nil {
						out[mf.GetName()] = map[string]map[string]bool{}
					}
					if out[mf.GetName()][lp.GetName()] == nil {
						out[mf.GetName()][lp.GetName()] = map[string]bool{}
					}
					out[mf.GetName()][lp.GetName()][lp.GetValue()] = true
				}
			}
		}
	}
	// What the notifier can answer must be what its metric exports.
	for _, r := range notifier.Results {
		if !out["orderworker_notifier_notifications_total"]["result"][string(r)] {
			t.Errorf("notifier result %q is not pre-initialised in orderworker_notifier_notifications_total", r)
		}
	}
	return out
}

// TestAlerts: every alert's expression uses the product's real metrics and
// labels, has a severity and a runbook link to an existing section of
// docs/operations.md.
func TestAlerts(t *testing.T) {
	known := metricSet(t)
	values := metricValues(t)
	anchors := docAnchors(t)
	var rendered int
	for _, o := range overlays(t) {
		b := render(t, o)
		w, _ := workerOf(t, b)
		for _, pr := range b.prometheusRules {
			rendered++
			for _, g := range pr.Spec.Groups {
				for _, r := range g.Rules {
					where := fmt.Sprintf("overlays/%s PrometheusRule %s alert %s", o, pr.Metadata.Name, r.Alert)
					checkExpr(t, where, r.Expr, known, values, w.effective("CONSUMER_NAME"))
					if r.Alert == "" {
						continue
					}
					if s := r.Labels["severity"]; s != "warning" && s != "critical" {
						t.Errorf("%s: severity %q, want warning or critical", where, s)
					}
					u := r.Annotations["runbook_url"]
					_, anchor, ok := strings.Cut(u, "docs/operations.md#")
					if !ok || !anchors[anchor] {
						t.Errorf("%s: runbook_url %q does not point at a section of docs/operations.md", where, u)
					}
					if anchor != strings.ToLower(r.Alert) {
						t.Errorf("%s: runbook anchor %q, want %q (a section named after the alert)", where, anchor, strings.ToLower(r.Alert))
					}
					if r.Annotations["summary"] == "" {
						t.Errorf("%s: no summary", where)
					}
				}
			}
		}
	}
	if rendered == 0 {
		t.Fatal("no overlay renders a PrometheusRule")
	}
	// Every failing notifier result and every shedding stage is watched by
	// an alert: a result no rule names can never page anyone.
	var exprs strings.Builder
	for _, o := range overlays(t) {
		for _, pr := range render(t, o).prometheusRules {
			for _, g := range pr.Spec.Groups {
				for _, r := range g.Rules {
					exprs.WriteString(r.Expr)
				}
			}
		}
	}
	for _, r := range notifier.Results {
		if r == notifier.ResultOK || r == notifier.ResultDuplicate {
			continue
		}
		if !regexp.MustCompile(`result=~?"[^"]*\b` + string(r) + `\b`).MatchString(exprs.String()) {
			t.Errorf("no alert matches orderworker_notifier_notifications_total{result=%q}", r)
		}
	}
	if !strings.Contains(exprs.String(), "orderworker_notifier_shed_total") {
		t.Error("no alert watches orderworker_notifier_shed_total (load shedding)")
	}
}

// docAnchors answers the GitHub anchors of docs/operations.md's headings.
func docAnchors(t *testing.T) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		var sb strings.Builder
		for _, r := range h {
			switch {
			case r == ' ':
				sb.WriteRune('-')
			case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
				sb.WriteRune(r)
			}
		}
		out[sb.String()] = true
	}
	return out
}

// TestDashboard: the Grafana dashboard is valid JSON whose queries use the
// product's real metrics.
func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "grafana", "orderworker.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("orderworker.json: %v", err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Error("dashboard has no uid or title")
	}
	known, values := metricSet(t), metricValues(t)
	used := map[string]bool{}
	var queries int
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			queries++
			checkExpr(t, "panel "+p.Title, tg.Expr, known, values, "")
			for _, m := range selectorRe.FindAllStringSubmatch(tg.Expr, -1) {
				used[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m[1], "_bucket"), "_sum"), "_count")] = true
			}
		}
	}
	if queries == 0 {
		t.Fatal("dashboard has no queries")
	}
	for name := range known {
		if name != "orderworker_build_info" && !used[name] {
			t.Errorf("metric %s is on no dashboard panel", name)
		}
	}
}
