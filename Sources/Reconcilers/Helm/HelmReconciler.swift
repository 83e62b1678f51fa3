import KubeClient
import YAML

/// Helm releases through K3s's helm-controller: one `HelmChart` in `kube-system` per
/// `spec.helmReleases` entry (plus a Secret for values read from files), applied with
/// server-side apply; releases removed from the desired state are pruned; health comes from
/// the install Job and the release's workloads.
public struct HelmReconciler: Reconciler {
    public struct Desired: Sendable, Equatable {
        public var releases: [HelmRelease]
    }

    public struct Observed: Sendable {
        /// The objects to apply, secret values included (read from their files).
        var objects: [KubeObject]
        var cluster: ObjectsObservation
        var health: [ReleaseHealth]
    }

    public static let name = ReconcilerName.helm
    public static let dependencies: [ReconcilerName] = [.k3s]
    public var owns: [OwnedResource] {
        [.kubernetesObject("helmcharts and secrets in kube-system labelled \(KubeObject.ownerLabel)=helm")]
    }

    let host: Host
    let cluster: ClusterAccess

    public init(host: Host, cluster: ClusterAccess) {
        self.host = host
        self.cluster = cluster
    }

    public func desired(from platform: Platform) -> Desired? {
        platform.spec.helmReleases.map { Desired(releases: $0) }
    }

    static let collections = [ClusterRender.helmChartRef(), ResourceRef(plural: "secrets", namespace: ClusterRender.helmNamespace)]

    public func observe(_ desired: Desired) async throws -> Observed {
        let api = try cluster.api()
        let (objects, observed) = try await objects(desired, api: api)
        return Observed(objects: objects, cluster: observed, health: try await health(desired, api: api))
    }

    /// The objects to apply and what the cluster has of them.
    func objects(_ desired: Desired, api: KubeAPI) async throws -> ([KubeObject], ObjectsObservation) {
        var objects = try ClusterRender.helm(desired.releases, secrets: .files(host.files))
        let observed = try await ObjectSync.observe(objects, api: api, owner: Self.name, collections: Self.collections)
        // Mark when the release's desired state changes (the chart's fields, a field dropped,
        // or a value from a secret file), so an install Job from before the change is not taken
        // for the outcome of this one; otherwise the mark stays.
        let changedValues = Set(objects.filter { $0.isSecret }.compactMap { object -> String? in
            observed.current[object.ref]?["data"] == object.body["data"] ? nil : object.ref.name
        })
        ObjectSync.markChanges(&objects, observed, plural: "helmcharts", now: host.clock.now()) {
            changedValues.contains(ClusterRender.valuesSecretName($0.ref.name ?? ""))
        }
        return (objects, observed)
    }

    public func plan(_ desired: Desired, _ observed: Observed) throws -> [Change] {
        ObjectSync.plan(observed.objects, observed.cluster)
    }

    public func apply(_ changes: [Change], desired: Desired) async throws {
        let api = try cluster.api()
        let (objects, _) = try await objects(desired, api: api)
        try await ObjectSync.apply(changes, desired: objects, api: api)
    }

    public func verify(_ desired: Desired) async throws -> Condition {
        ReleaseHealth.summary(try await health(desired, api: try cluster.api()))
    }

    public func converged(_ desired: Desired, _ observed: Observed) -> Condition {
        ReleaseHealth.summary(observed.health)
    }

    func health(_ desired: Desired, api: KubeAPI) async throws -> [ReleaseHealth] {
        var out: [ReleaseHealth] = []
        do {
            for release in desired.releases { out.append(try await ReleaseHealth.check(release, api: api)) }
        } catch {
            throw ReconcileError.kube(error, doing: "checking the releases' health")
        }
        return out
    }
}
