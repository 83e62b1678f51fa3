import KubeClient
import YAML

/// The Argo CD App-of-Apps: once the Argo CD release is healthy and its `Application` CRD is
/// established, the root `Application` (automated sync with prune and self-heal) and, for a
/// private repository, its credentials Secret. Reports the root's sync and health status.
public struct ArgoCDReconciler: Reconciler {
    public struct Desired: Sendable, Equatable {
        public var spec: ArgoCDSpec
        /// The Helm release that installs Argo CD; nil if the desired state lacks it.
        public var release: HelmRelease?
    }

    public struct Observed: Sendable {
        var objects: [KubeObject]
        var cluster: ObjectsObservation
        /// The root Application as the cluster has it.
        var root: JSONValue?
    }

    public static let name = ReconcilerName.argocd
    /// Ordered after helm, but it waits only on its own release, not on every release.
    public static let dependencies: [ReconcilerName] = [.helm]
    public static let proceedsWhileDependenciesProgress = true
    public var owns: [OwnedResource] {
        [.kubernetesObject("applications, appprojects and secrets labelled \(KubeObject.ownerLabel)=argocd")]
    }

    let host: Host
    let cluster: ClusterAccess

    public init(host: Host, cluster: ClusterAccess) {
        self.host = host
        self.cluster = cluster
    }

    public func desired(from platform: Platform) -> Desired? {
        guard let spec = platform.spec.argocd else { return nil }
        return Desired(spec: spec, release: platform.spec.helmReleases?.first { $0.name == spec.release })
    }

    public func observe(_ desired: Desired) async throws -> Observed {
        let api = try cluster.api()
        try await requireArgoCD(desired, api: api)
        let objects = try ClusterRender.argocd(desired.spec, secrets: .files(host.files))
        let namespace = desired.spec.namespace.value
        let observed = try await ObjectSync.observe(objects, api: api, owner: Self.name, collections: [
            ClusterRender.applicationRef(namespace: namespace), ClusterRender.appProjectRef(namespace: namespace),
            ResourceRef(plural: "secrets", namespace: namespace),
        ])
        let root = objects.last.flatMap { observed.current[$0.ref] }
        return Observed(objects: objects, cluster: observed, root: desired.spec.appOfApps == nil ? nil : root)
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

    public func plan(_ desired: Desired, _ observed: Observed) throws -> [Change] {
        ObjectSync.plan(observed.objects, observed.cluster)
    }

    public func apply(_ changes: [Change], desired: Desired) async throws {
        try await ObjectSync.apply(changes, api: try cluster.api())
    }

    public func verify(_ desired: Desired) async throws -> Condition {
        converged(desired, try await observe(desired))
    }

    public func converged(_ desired: Desired, _ observed: Observed) -> Condition {
        guard let app = desired.spec.appOfApps else { return .ready("Argo CD is healthy; no appOfApps declared") }
        return Self.rootCondition(app.name.value, observed.root)
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
