// Package deploy checks the files an operator copies: the Kubernetes
// manifests are decoded strictly into the Kubernetes API types (a typo in
// a field name fails), and what the README promises of them is asserted.
// A module of its own, so that the service's go.mod does not carry
// k8s.io/api.
package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// kustomization is the part of kustomize's Kustomization these manifests use.
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels"`
	Resources []string `json:"resources"`
}

type manifests struct {
	sts      *appsv1.StatefulSet
	services map[string]*corev1.Service
	pdb      *policyv1.PodDisruptionBudget
}

func strict(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func load(t *testing.T) manifests {
	t.Helper()
	dir := "kubernetes"
	var k kustomization
	strict(t, filepath.Join(dir, "kustomization.yaml"), &k)
	if k.Kind != "Kustomization" || len(k.Resources) == 0 {
		t.Fatalf("kustomization: kind %q, %d resources", k.Kind, len(k.Resources))
	}
	m := manifests{services: map[string]*corev1.Service{}}
	for _, r := range k.Resources {
		path := filepath.Join(dir, r)
		var meta struct {
			Kind string `json:"kind"`
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("resource %s: %v", r, err)
		}
		if err := yaml.Unmarshal(b, &meta); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		switch meta.Kind {
		case "StatefulSet":
			m.sts = &appsv1.StatefulSet{}
			strict(t, path, m.sts)
		case "Service":
			s := &corev1.Service{}
			strict(t, path, s)
			m.services[s.Name] = s
		case "PodDisruptionBudget":
			m.pdb = &policyv1.PodDisruptionBudget{}
			strict(t, path, m.pdb)
		default:
			t.Fatalf("%s: unexpected kind %q", r, meta.Kind)
		}
	}
	if m.sts == nil || m.pdb == nil || len(m.services) != 2 {
		t.Fatalf("want a StatefulSet, a PodDisruptionBudget and two Services; got %+v", m)
	}
	return m
}

func env(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func TestKubernetesManifests(t *testing.T) {
	m := load(t)
	sts := m.sts
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Errorf("StatefulSet: %d volumeClaimTemplates, want 1 (a volume per pod)", len(sts.Spec.VolumeClaimTemplates))
	}
	peers, ok := m.services[sts.Spec.ServiceName]
	if !ok || peers.Spec.ClusterIP != corev1.ClusterIPNone || !peers.Spec.PublishNotReadyAddresses {
		t.Errorf("the StatefulSet's service %q must be headless and publish not-ready pods", sts.Spec.ServiceName)
	}
	front := 0
	for name, s := range m.services {
		if name != sts.Spec.ServiceName && s.Spec.ClusterIP != corev1.ClusterIPNone {
			front++
		}
		for k, v := range s.Spec.Selector {
			if sts.Spec.Template.Labels[k] != v {
				t.Errorf("service %s selects %s=%s, which the pods do not carry", name, k, v)
			}
		}
	}
	if front != 1 {
		t.Errorf("%d front services, want 1", front)
	}
	for k, v := range m.pdb.Spec.Selector.MatchLabels {
		if sts.Spec.Template.Labels[k] != v {
			t.Errorf("PodDisruptionBudget selects %s=%s, which the pods do not carry", k, v)
		}
	}

	pod := sts.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness probe: %+v, want GET /readyz", p)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
		t.Errorf("liveness probe: %+v, want GET /healthz", p)
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("pod: runAsNonRoot is not set")
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("container: readOnlyRootFilesystem is not set")
	}
	mounted := false
	for _, vm := range c.VolumeMounts {
		mounted = mounted || vm.Name == sts.Spec.VolumeClaimTemplates[0].Name && vm.MountPath == env(c, "CHARGEAUTH_DATA_DIR")
	}
	if !mounted {
		t.Error("the claimed volume is not mounted at CHARGEAUTH_DATA_DIR")
	}

	// The grace covers the drain and the shutdown grace.
	drain, err1 := time.ParseDuration(env(c, "CHARGEAUTH_DRAIN_DELAY"))
	grace, err2 := time.ParseDuration(env(c, "CHARGEAUTH_SHUTDOWN_GRACE"))
	if err1 != nil || err2 != nil || pod.TerminationGracePeriodSeconds == nil {
		t.Fatalf("drain %v, grace %v, terminationGracePeriodSeconds %v", err1, err2, pod.TerminationGracePeriodSeconds)
	}
	if total := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second; total <= drain+grace {
		t.Errorf("terminationGracePeriodSeconds %v does not cover drain %v + shutdown grace %v", total, drain, grace)
	}

	// --peers names every pod by its stable DNS name.
	replicas := int32(1)
	if sts.Spec.Replicas != nil {
		replicas = *sts.Spec.Replicas
	}
	var want []string
	for i := range replicas {
		want = append(want, fmt.Sprintf("%s-%d=http://%s-%d.%s:8080", sts.Name, i, sts.Name, i, sts.Spec.ServiceName))
	}
	if got := env(c, "CHARGEAUTH_PEERS"); got != strings.Join(want, ",") {
		t.Errorf("CHARGEAUTH_PEERS = %q, want %q", got, strings.Join(want, ","))
	}
}
