public import KubeClient
import YAML

/// How one Helm release is doing, as helm-controller and the release's workloads show it.
public struct ReleaseHealth: Sendable, Equatable {
    public var status: Condition.Status
    public var reason: String
    public var message: String

    /// Set on a HelmChart when nodeagent changes its `spec`: an install Job older than this
    /// ran for an earlier spec.
    public static let specAppliedAnnotation = "nodeagent/spec-applied-at"
    static let jobNameLabel = "batch.kubernetes.io/job-name"
    static let instanceLabel = "app.kubernetes.io/instance"

    /// Checks, in order: the HelmChart exists and helm-controller has not given up on it; its
    /// install Job (`helm-install-NAME`) ran for the current spec and succeeded; every
    /// Deployment, StatefulSet and DaemonSet of the release (label
    /// `app.kubernetes.io/instance=NAME` in the target namespace) is available.
    public static func check(_ release: HelmRelease, api: KubeAPI) async throws -> ReleaseHealth {
        let name = release.name.value
        guard let chart = try await api.getIfPresent(ClusterRender.helmChartRef(name)) else {
            return ReleaseHealth(status: .progressing, reason: "NotApplied", message: "\(name): the HelmChart does not exist yet")
        }
        let jobName = chart["status"]?["jobName"]?.string ?? "helm-install-\(name)"
        if let failed = condition(chart, "Failed"), failed["status"]?.string == "True" {
            let why = [failed["reason"]?.string, failed["message"]?.string].compactMap { $0 }.joined(separator: ": ")
            return ReleaseHealth(status: .failed, reason: "InstallFailed",
                                 message: "\(name): helm-controller gave up: \(why)" + (try await logTail(jobName, api: api)))
        }
        let jobRef = ResourceRef(group: "batch", version: "v1", plural: "jobs", namespace: ClusterRender.helmNamespace, name: jobName)
        guard let job = try await api.getIfPresent(jobRef) else {
            return ReleaseHealth(status: .progressing, reason: "WaitingForJob", message: "\(name): waiting for helm-controller to start Job \(jobName)")
        }
        let version = job["spec"]?["template"]?["spec"]?["containers"]?.array?.first?["env"]?.array?
            .first { $0["name"]?.string == "VERSION" }?["value"]?.string
        let created = job["metadata"]?["creationTimestamp"]?.string.flatMap(Timestamp.init(rfc3339:))
        let applied = chart["metadata"]?["annotations"]?[specAppliedAnnotation]?.string.flatMap(Timestamp.init(rfc3339:))
        if version.map({ $0 != release.version }) ?? false || (applied != nil && (created ?? applied!) < applied!) {
            return ReleaseHealth(status: .progressing, reason: "WaitingForJob",
                                 message: "\(name): Job \(jobName) ran for an earlier spec; waiting for helm-controller to replace it")
        }
        switch KubeViews.jobState(job) {
        case .running:
            // helm-controller's Job has restartPolicy OnFailure and backoffLimit 1000: a failing
            // `helm install` restarts in its pod for days and the Job never fails. The pod says so.
            if let crash = try await crashLoop(jobName, api: api) {
                return ReleaseHealth(status: .failed, reason: "InstallCrashLooping",
                                     message: "\(name): the install keeps failing: \(crash)" + (try await logTail(jobName, api: api)))
            }
            let failures = job["status"]?["failed"]?.int ?? 0
            let note = failures > 0 ? " (\(failures) failed attempt\(failures == 1 ? "" : "s") so far)" + (try await logTail(jobName, api: api)) : ""
            return ReleaseHealth(status: .progressing, reason: "Installing", message: "\(name): Job \(jobName) is running\(note)")
        case .failed:
            let c = job["status"]?["conditions"]?.array?.first { $0["type"]?.string == "Failed" }
            let why = [c?["reason"]?.string, c?["message"]?.string].compactMap { $0 }.joined(separator: ": ")
            return ReleaseHealth(status: .failed, reason: "InstallJobFailed",
                                 message: "\(name): Job \(jobName) failed: \(why.isEmpty ? "no reason given" : why)" + (try await logTail(jobName, api: api)))
        case .succeeded:
            break
        }
        let waiting = try await unavailableWorkloads(name, namespace: release.namespace.value, api: api)
        if !waiting.isEmpty {
            return ReleaseHealth(status: .progressing, reason: "WorkloadsNotAvailable",
                                 message: "\(name): installed \(release.version); waiting for \(waiting.joined(separator: ", "))")
        }
        return ReleaseHealth(status: .ready, reason: "Installed", message: "\(name): \(release.chart) \(release.version) installed and available")
    }

    /// Waiting reasons of a container that will not get better by waiting.
    static let stuckReasons: Set<String> = ["CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
                                            "CreateContainerError", "InvalidImageName", "RunContainerError"]

    /// How the Job's pod is failing, when it is: `pod P: container helm CrashLoopBackOff after 3
    /// restarts (last exit 1: Error)`; nil while it is starting or running normally.
    static func crashLoop(_ job: String, api: KubeAPI) async throws -> String? {
        let pods = (try? await api.list(ResourceRef(plural: "pods", namespace: ClusterRender.helmNamespace),
                                        labelSelector: "\(jobNameLabel)=\(job)")) ?? []
        for pod in pods {
            for c in pod["status"]?["containerStatuses"]?.array ?? [] {
                let restarts = c["restartCount"]?.int ?? 0
                let last = c["lastState"]?["terminated"]
                let exit = last.map { t in " (last exit \(t["exitCode"]?.int.map(String.init) ?? "?")\(t["reason"]?.string.map { ": \($0)" } ?? ""))" } ?? ""
                // Between two back-offs the container runs again: it has still failed before.
                if c["state"]?["waiting"] == nil, restarts > 0, let code = last?["exitCode"]?.int, code != 0 {
                    return "pod \(pod["metadata"]?["name"]?.string ?? "?"): container \(c["name"]?.string ?? "?") failed \(restarts) time\(restarts == 1 ? "" : "s") and is trying again\(exit)"
                }
                guard let reason = c["state"]?["waiting"]?["reason"]?.string, stuckReasons.contains(reason) else { continue }
                let message = reason == "CrashLoopBackOff" ? "" : (c["state"]?["waiting"]?["message"]?.string.map { ": \($0.prefix(200))" } ?? "")
                return "pod \(pod["metadata"]?["name"]?.string ?? "?"): container \(c["name"]?.string ?? "?") \(reason)\(message) after \(restarts) restart\(restarts == 1 ? "" : "s")\(exit)"
            }
        }
        return nil
    }

    static func condition(_ object: JSONValue, _ type: String) -> JSONValue? {
        object["status"]?["conditions"]?.array?.first { $0["type"]?.string == type }
    }

    /// The last lines of the Job's newest pod, as `; last log lines: …`, or nothing.
    static func logTail(_ job: String, api: KubeAPI) async throws -> String {
        let pods = (try? await api.list(ResourceRef(plural: "pods", namespace: ClusterRender.helmNamespace),
                                        labelSelector: "\(jobNameLabel)=\(job)")) ?? []
        let newest = pods.max { ($0["metadata"]?["creationTimestamp"]?.string ?? "") < ($1["metadata"]?["creationTimestamp"]?.string ?? "") }
        guard let pod = newest?["metadata"]?["name"]?.string,
              let log = try? await api.log(namespace: ClusterRender.helmNamespace, pod: pod, tailLines: 10,
                                           previous: Self.restarted(newest)) else { return "" }
        let lines = log.split(separator: "\n").suffix(10).map { String($0.prefix(300)) }
        return lines.isEmpty ? "" : "; last log lines of \(pod): " + lines.joined(separator: " | ")
    }

    /// Whether the pod's container ran before and failed: its log is then the previous run's
    /// (`previous=true`), where the failure is.
    static func restarted(_ pod: JSONValue?) -> Bool {
        (pod?["status"]?["containerStatuses"]?.array ?? []).contains { ($0["restartCount"]?.int ?? 0) > 0 && $0["state"]?["running"] != nil }
    }

    /// Workloads of the release that are not rolled out and available, as
    /// `deployment/NAME (0/1 available)`: the controller has seen the latest spec
    /// (`observedGeneration`), every replica runs it (updated) and is available.
    static func unavailableWorkloads(_ release: String, namespace: String, api: KubeAPI) async throws -> [String] {
        var out: [String] = []
        let selector = "\(instanceLabel)=\(release)"
        for (plural, kind) in [("deployments", "deployment"), ("statefulsets", "statefulset"), ("daemonsets", "daemonset")] {
            let items = try await api.list(ResourceRef(group: "apps", version: "v1", plural: plural, namespace: namespace), labelSelector: selector)
            for item in items {
                let status = item["status"]
                let name = "\(kind)/\(item["metadata"]?["name"]?.string ?? "?")"
                let (want, updated, have): (Int, Int, Int)
                switch plural {
                case "daemonsets":
                    want = status?["desiredNumberScheduled"]?.int ?? 0
                    (updated, have) = (status?["updatedNumberScheduled"]?.int ?? 0, status?["numberAvailable"]?.int ?? 0)
                case "statefulsets":
                    want = item["spec"]?["replicas"]?.int ?? 1
                    (updated, have) = (status?["updatedReplicas"]?.int ?? 0, status?["readyReplicas"]?.int ?? 0)
                default:
                    want = item["spec"]?["replicas"]?.int ?? 1
                    (updated, have) = (status?["updatedReplicas"]?.int ?? 0, status?["availableReplicas"]?.int ?? 0)
                }
                let generation = item["metadata"]?["generation"]?.int ?? 0
                if (status?["observedGeneration"]?.int ?? 0) < generation {
                    out.append("\(name) (its controller has not seen the new spec yet)")
                } else if updated < want {
                    out.append("\(name) (\(updated)/\(want) updated)")
                } else if have < want {
                    out.append("\(name) (\(have)/\(want) available)")
                }
            }
        }
        return out
    }

    /// One condition for several releases: the worst status wins; every release is named.
    static func summary(_ all: [ReleaseHealth]) -> Condition {
        guard !all.isEmpty else { return .ready("no Helm releases declared") }
        let worst = all.first { $0.status == .failed } ?? all.first { $0.status == .progressing }
        let message = all.map(\.message).joined(separator: "; ")
        guard let worst else { return Condition(.ready, reason: "Converged", message: message) }
        return Condition(worst.status, reason: worst.reason, message: message)
    }
}
