import Foundation
import Reconcilers
import YAML

/// Plays K3s's helm-controller (and the workloads a chart creates) against a `KubeTestServer`,
/// one step at a time: like the real one, it keeps a hash of the chart's spec and values
/// Secret on the install Job (`helmcharts.helm.cattle.io/configHash`), and for each HelmChart
/// whose Job is missing or has another hash it (re)creates `helm-install-NAME` (complete, or
/// failed with a pod log for the releases named in `failing`) and, on success, a rolled-out,
/// available Deployment labelled with the release.
public struct FakeHelmController: Sendable {
    public let server: KubeTestServer

    public init(server: KubeTestServer) {
        self.server = server
    }

    static let job = KubeTestServer.builtIn.first { $0.plural == "jobs" }!
    static let pod = KubeTestServer.builtIn.first { $0.plural == "pods" }!
    static let deployment = KubeTestServer.builtIn.first { $0.plural == "deployments" }!

    public func step(failing: Set<String> = [], available: Bool = true) {
        for chart in server.objects(KubeTestServer.helmChart, namespace: "kube-system") {
            guard let name = chart["metadata"]?["name"]?.string, let version = chart["spec"]?["version"]?.string else { continue }
            let jobName = "helm-install-\(name)"
            let existing = server.object("jobs", namespace: "kube-system", name: jobName, groupVersion: "batch/v1")
            let values = (chart["spec"]?["valuesSecrets"]?.array ?? []).compactMap { $0["name"]?.string }
                .map { server.object("secrets", namespace: "kube-system", name: $0)?["data"]?.jsonText ?? "" }
            let hash = "SHA256=" + Digest.sha256Hex(Array(((chart["spec"]?.jsonText ?? "") + values.joined()).utf8)).uppercased()
            let hashKey = ["spec", "template", "metadata", "annotations", "helmcharts.helm.cattle.io/configHash"]
            if existing?[hashKey]?.string == hash { continue }
            if existing != nil { server.remove(Self.job, namespace: "kube-system", name: jobName) }
            let fails = failing.contains(name)
            let condition: JSONValue = fails
                ? .object(["type": .string("Failed"), "status": .string("True"), "reason": .string("BackoffLimitExceeded"),
                           "message": .string("Job has reached the specified backoff limit")])
                : .object(["type": .string("Complete"), "status": .string("True")])
            server.put(Self.job, namespace: "kube-system", .object([
                "apiVersion": .string("batch/v1"), "kind": .string("Job"),
                "metadata": .object(["name": .string(jobName), "namespace": .string("kube-system"),
                                     "creationTimestamp": .string(KubeTestServer.now())]),
                "spec": .object(["template": .object([
                    "metadata": .object(["annotations": .object(["helmcharts.helm.cattle.io/configHash": .string(hash)])]),
                    "spec": .object(["containers": .array([.object([
                    "name": .string("helm"),
                    "env": .array([.object(["name": .string("VERSION"), "value": .string(version)])]),
                ])])])])]),
                "status": .object(["conditions": .array([condition]), fails ? "failed" : "succeeded": .int(fails ? 3 : 1)]),
            ]))
            if fails {
                let pod = "\(jobName)-x7k2p"
                server.put(Self.pod, namespace: "kube-system", .object([
                    "apiVersion": .string("v1"), "kind": .string("Pod"),
                    "metadata": .object(["name": .string(pod), "namespace": .string("kube-system"),
                                         "labels": .object(["batch.kubernetes.io/job-name": .string(jobName)])]),
                ]))
                server.setLog(namespace: "kube-system", pod: pod, "helm_v3 upgrade --install \(name)\nError: chart \"\(name)\" version \"\(version)\" not found in repository\n")
                continue
            }
            let namespace = chart["spec"]?["targetNamespace"]?.string ?? "default"
            server.put(Self.deployment, namespace: namespace, .object([
                "apiVersion": .string("apps/v1"), "kind": .string("Deployment"),
                "metadata": .object(["name": .string("\(name)-server"), "namespace": .string(namespace),
                                     "labels": .object(["app.kubernetes.io/instance": .string(name)])]),
                "spec": .object(["replicas": .int(1)]),
                "status": .object(["observedGeneration": .int(1), "updatedReplicas": .int(1), "availableReplicas": .int(available ? 1 : 0)]),
            ]))
        }
    }

    /// Argo CD's CRD, established, and its kind served: what installing the chart does.
    /// Argo CD's chart installs both CRDs: Application and AppProject.
    public func establishApplicationCRD() {
        for (type, name) in [(KubeTestServer.application, "applications.argoproj.io"), (KubeTestServer.appProject, "appprojects.argoproj.io")] {
            server.register(type)
            server.put(KubeTestServer.builtIn.first { $0.plural == "customresourcedefinitions" }!, .object([
                "apiVersion": .string("apiextensions.k8s.io/v1"), "kind": .string("CustomResourceDefinition"),
                "metadata": .object(["name": .string(name)]),
                "status": .object(["conditions": .array([.object(["type": .string("Established"), "status": .string("True")])])]),
            ]))
        }
    }
}
