// Package k8s holds the Kubernetes manifests of the worker and the notifier
// as kustomize bases, components and overlays; it has no Go API.
//
// Its test (make k8s-check) renders every overlay with the kustomize Go API,
// decodes every object strictly into its Kubernetes Go type, validates the
// custom resources (KEDA, Prometheus Operator) against their CRD schemas in
// testdata/crds, and checks that the manifests agree with the code: the
// environment variables the services read, their ports and probe paths,
// the merchant credential paths, the stream and consumer names, the metric
// names in alerts and the dashboard, and the scaling arithmetic
// (max replicas × in-flight per worker ≤ the consumer's max ack pending).
package k8s
