import Foundation
import Reconcilers
import YAML

/// Plays K3s's helm-controller (and the workloads a chart creates) against a `KubeTestServer`,
/// one step at a time, as the version K3s bundles behaves (k3s-io/helm-controller
/// `pkg/controllers/chart/chart.go` at v0.16.5 and v0.17.1, alike in all of this):
/// - it claims a chart it has not seen with a typed `Update` that re-serialises the spec from
///   its Go struct, where every field is `omitempty`: `createNamespace: false`, `""` and empty
///   lists disappear, and the annotation `helmcharts.cattle.io/managed-by` appears;
/// - it keeps a hash of the chart's spec and values on the install Job's pod template
///   (`helmcharts.helm.cattle.io/configHash`, `SHA256=HEX`) and (re)creates `helm-install-NAME`
///   (`restartPolicy: OnFailure`, `backoffLimit: 1000`) when the hash changes, recording
///   `status.jobName` and `JobCreated=True`, `Failed=False` on the chart;
/// - an install that fails (the releases named in `failing`) restarts its container in the same
///   pod: `CrashLoopBackOff`, a `restartCount` that grows each step, `Error: INSTALLATION FAILED`
///   in the log; the Job stays active with `status.failed` 0, and the chart never says Failed;
/// - a good install completes the Job, and the chart's workload rolls out.
public struct FakeHelmController: Sendable {
    public let server: KubeTestServer
    public let version: HelmControllerVersion

    public init(server: KubeTestServer, version: HelmControllerVersion = .v0_17_1) {
        self.server = server
        self.version = version
    }

    static let job = KubeTestServer.builtIn.first { $0.plural == "jobs" }!
    static let pod = KubeTestServer.builtIn.first { $0.plural == "pods" }!
    static let deployment = KubeTestServer.builtIn.first { $0.plural == "deployments" }!
    static let managedBy = "helmcharts.cattle.io/managed-by"
    static let hashKey = ["spec", "template", "metadata", "annotations", "helmcharts.helm.cattle.io/configHash"]

    /// A Go struct's JSON with `omitempty` on every field: zero values are not written.
    static func omittingZeroValues(_ spec: JSONValue) -> JSONValue {
        guard case .object(let members) = spec else { return spec }
        return .object(members.filter { m in
            switch m.value {
            case .bool(false), .null: return false
            case .string(let s): return !s.isEmpty
            case .array(let a): return !a.isEmpty
            case .object(let o): return !o.isEmpty
            default: return true
            }
        })
    }

    public func step(failing: Set<String> = [], available: Bool = true) {
        for var chart in server.objects(KubeTestServer.helmChart, namespace: "kube-system") {
            guard let name = chart["metadata"]?["name"]?.string, let chartVersion = chart["spec"]?["version"]?.string else { continue }
            // Claiming: a typed Update of the whole object. v0.17.1's CRD also defaults two
            // fields on write (kube-apiserver applies `default:` from the schema).
            if chart[["metadata", "annotations", Self.managedBy]] == nil {
                chart[["metadata", "annotations", Self.managedBy]] = .string("helm-controller")
                chart[["spec"]] = Self.omittingZeroValues(chart["spec"] ?? .object([]))
                if version == .v0_17_1 {
                    if chart[["spec", "driver"]] == nil { chart[["spec", "driver"]] = .string("secret") }
                    if chart[["spec", "failurePolicy"]] == nil { chart[["spec", "failurePolicy"]] = .string("reinstall") }
                }
                server.put(KubeTestServer.helmChart, namespace: "kube-system", chart)
            }
            let jobName = "helm-install-\(name)"
            let existing = server.object("jobs", namespace: "kube-system", name: jobName, groupVersion: "batch/v1")
            let values = (chart["spec"]?["valuesSecrets"]?.array ?? []).compactMap { $0["name"]?.string }
                .map { server.object("secrets", namespace: "kube-system", name: $0)?["data"]?.jsonText ?? "" }
            // The Job renders from the typed spec (zero values and absent fields alike) and the
            // values: the same spec in another spelling is the same Job.
            let hash = "SHA256=" + Digest.sha256Hex(Array(((Self.omittingZeroValues(chart["spec"] ?? .object([])).jsonText) + values.joined()).utf8)).uppercased()
            let fails = failing.contains(name)
            let podName = "\(jobName)-x7k2p"
            if existing?[Self.hashKey]?.string == hash {
                // The same Job: a failing install restarts its container once more.
                if fails, var pod = server.object("pods", namespace: "kube-system", name: podName) {
                    let restarts = (pod[["status", "containerStatuses"]]?.array?.first?["restartCount"]?.int ?? 0) + 1
                    pod[["status"]] = Self.crashLooping(podName, restarts: restarts)
                    server.put(Self.pod, namespace: "kube-system", pod)
                }
                continue
            }
            if existing != nil {
                server.remove(Self.job, namespace: "kube-system", name: jobName)
                server.remove(Self.pod, namespace: "kube-system", name: podName)
            }
            server.put(Self.job, namespace: "kube-system", .object([
                "apiVersion": .string("batch/v1"), "kind": .string("Job"),
                "metadata": .object(["name": .string(jobName), "namespace": .string("kube-system"),
                                     "labels": .object(["helmcharts.helm.cattle.io/chart": .string(name)]),
                                     "creationTimestamp": .string(server.now())]),
                "spec": .object([
                    "backoffLimit": .int(1000),
                    "template": .object([
                        "metadata": .object(["annotations": .object(["helmcharts.helm.cattle.io/configHash": .string(hash)])]),
                        "spec": .object([
                            "restartPolicy": .string("OnFailure"),
                            "containers": .array([.object([
                                "name": .string("helm"), "args": .array([.string("install")]),
                                "env": .array([.object(["name": .string("VERSION"), "value": .string(chartVersion)])]),
                            ])]),
                        ]),
                    ]),
                ]),
                // OnFailure: a failing install never fails the Job (failed stays 0 up to 1000).
                "status": fails ? .object(["active": .int(1)])
                    : .object(["conditions": .array([.object(["type": .string("Complete"), "status": .string("True")])]), "succeeded": .int(1)]),
            ]))
            var claimed = server.object("helmcharts", namespace: "kube-system", name: name, groupVersion: "helm.cattle.io/v1") ?? chart
            claimed[["status"]] = .object([
                "jobName": .string(jobName),
                "conditions": .array([
                    .object(["type": .string("JobCreated"), "status": .string("True"), "reason": .string("Job created"),
                             "message": .string("Applying HelmChart using Job kube-system/\(jobName)")]),
                    .object(["type": .string("Failed"), "status": .string("False")]),
                ]),
            ])
            server.put(KubeTestServer.helmChart, namespace: "kube-system", claimed)
            if fails {
                server.put(Self.pod, namespace: "kube-system", .object([
                    "apiVersion": .string("v1"), "kind": .string("Pod"),
                    "metadata": .object(["name": .string(podName), "namespace": .string("kube-system"),
                                         "labels": .object(["batch.kubernetes.io/job-name": .string(jobName), "job-name": .string(jobName)]),
                                         "creationTimestamp": .string(server.now())]),
                    "spec": .object(["restartPolicy": .string("OnFailure")]),
                    "status": Self.crashLooping(podName, restarts: 1),
                ]))
                let repo = chart["spec"]?["repo"]?.string ?? ""
                server.setLog(namespace: "kube-system", pod: podName, """
                    + helm_v3 install --namespace \(chart["spec"]?["targetNamespace"]?.string ?? "default") --version \(chartVersion) \(name) \(chart["spec"]?["chart"]?.string ?? name) --repo \(repo)
                    Error: INSTALLATION FAILED: chart "\(chart["spec"]?["chart"]?.string ?? name)" version "\(chartVersion)" not found in \(repo) repository

                    """)
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

    /// A pod whose only container exited 1 and is waiting to be restarted again.
    static func crashLooping(_ pod: String, restarts: Int) -> JSONValue {
        .object([
            "phase": .string("Running"),
            "containerStatuses": .array([.object([
                "name": .string("helm"), "ready": .bool(false), "restartCount": .int(restarts),
                "state": .object(["waiting": .object([
                    "reason": .string("CrashLoopBackOff"),
                    "message": .string("back-off 5m0s restarting failed container=helm pod=\(pod)_kube-system"),
                ])]),
                "lastState": .object(["terminated": .object(["exitCode": .int(1), "reason": .string("Error")])]),
            ])]),
        ])
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
