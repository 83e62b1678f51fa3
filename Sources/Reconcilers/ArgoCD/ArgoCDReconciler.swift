import KubeClient
import YAML

/// The Argo CD App-of-Apps: once the Argo CD release is healthy and its `Application` CRD is
/// established, the root `Application` (automated sync with prune and self-heal) and, for a
/// private repository, its credentials Secret. Reports the root's sync and health status.
typealias ArgoCDReconciler = ClusterObjectsReconciler<ArgoCDObjects>

extension ClusterObjectsReconciler where Section == ArgoCDObjects {
    init(host: Host, cluster: ClusterAccess) { self.init(ArgoCDObjects(), host: host, cluster: cluster) }
}

struct ArgoCDObjects: ClusterSection {
    struct Desired: Sendable, Equatable {
        var spec: ArgoCDSpec
        /// The Helm release that installs Argo CD; nil if the desired state lacks it.
        var release: HelmRelease?
    }

    static let name = ReconcilerName.argocd
    /// Ordered after helm, but it waits only on its own release, not on every release.
    static let dependencies: [ReconcilerName] = [.helm]
    static let proceedsWhileDependenciesProgress = true
    var owns: [OwnedResource] {
        [.kubernetesObject("applications, appprojects and secrets labelled \(KubeObject.ownerLabel)=argocd")]
    }
    var objectsName: String { "the App-of-Apps objects" }

    func desired(from platform: Platform) -> Desired? {
        guard let spec = platform.spec.argocd else { return nil }
        return Desired(spec: spec, release: platform.spec.helmReleases?.first { $0.name == spec.release })
    }

    func objects(_ desired: Desired, host: Host, api: KubeAPI) async throws -> (objects: [KubeObject], collections: [ResourceRef], context: Void) {
        try await requireArgoCD(desired, api: api)
        let namespace = desired.spec.namespace.value
        return (try ClusterRender.argocd(desired.spec, secrets: .files(host.files)),
                [ClusterRender.applicationRef(namespace: namespace), ClusterRender.appProjectRef(namespace: namespace),
                 ResourceRef(plural: "secrets", namespace: namespace)], ())
    }

    /// The root Application as the cluster has it (nil without an App-of-Apps).
    func facts(_ desired: Desired, context: Void, objects: [KubeObject], observed: ObjectsObservation, api: KubeAPI) async throws -> JSONValue? {
        desired.spec.appOfApps == nil ? nil : objects.last.flatMap { observed.current[$0.ref] }
    }

    func condition(_ desired: Desired, _ root: JSONValue?) -> Condition {
        guard let app = desired.spec.appOfApps else { return .ready("Argo CD is healthy; no appOfApps declared") }
        return Self.rootCondition(app.name.value, root)
    }

    /// Waits (without failing) until the Argo CD release is healthy and the API serves
    /// `applications.argoproj.io` and `appprojects.argoproj.io`: applying before would be refused.
    func requireArgoCD(_ desired: Desired, api: KubeAPI) async throws {
        guard let release = desired.release else {
            throw ReconcileError(.stalled, reason: "NoArgoCDRelease", "spec.argocd.release \(desired.spec.release) is not a declared Helm release")
        }
        do {
            let health = try await ReleaseHealth.check(release, api: api)
            guard health.status == .ready else {
                throw ReconcileError(health.status == .failed ? .failed : .waiting, reason: "WaitingForArgoCD",
                                     "the Argo CD release is not healthy yet: \(health.message)")
            }
            for crd in ["applications.argoproj.io", "appprojects.argoproj.io"] {
                guard try await api.isEstablished(crd: crd) else {
                    throw ReconcileError(.waiting, reason: "CRDNotEstablished", "waiting for the CRD \(crd) to be established (Argo CD installs it)")
                }
            }
        } catch {
            throw ReconcileError.kube(error, doing: "checking Argo CD")
        }
    }

    /// Ready when the root Application is Synced and Healthy; Failed when Degraded; else
    /// Progressing, with Argo CD's own words.
    static func rootCondition(_ name: String, _ root: JSONValue?) -> Condition {
        let sync = root?["status"]?["sync"]?["status"]?.string ?? "Unknown"
        let health = root?["status"]?["health"]?["status"]?.string ?? "Unknown"
        let revision = root?["status"]?["sync"]?["revision"]?.string.map { " at \($0.prefix(12))" } ?? ""
        let message = "root Application \(name): sync \(sync), health \(health)\(revision)"
        switch (sync, health) {
        case ("Synced", "Healthy"): return Condition(.ready, reason: "Converged", message: message)
        case (_, "Degraded"): return Condition(.failed, reason: "AppDegraded", message: message)
        case (_, "Missing") where sync == "OutOfSync": return Condition(.progressing, reason: "Syncing", message: message)
        default: return Condition(.progressing, reason: root?["status"] == nil ? "WaitingForArgoCD" : "Syncing", message: message)
        }
    }
}
