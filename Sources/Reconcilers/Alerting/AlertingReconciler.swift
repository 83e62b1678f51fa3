import KubeClient
import YAML

/// Monitoring and email alerting on the kube-prometheus-stack release: its values (through a
/// HelmChartConfig: Alertmanager's email routing, K3s-aware defaults), the SMTP password
/// Secret, the Grafana dashboard and nodeagent's scrape target at once; nodeagent's
/// PrometheusRule and ServiceMonitor once the chart's CRDs are established.
public struct AlertingReconciler: Reconciler {
    public struct Desired: Sendable, Equatable {
        public var platform: Platform
        public var release: HelmRelease?
    }

    public struct Observed: Sendable {
        var objects: [KubeObject]
        var cluster: ObjectsObservation
        var namespaceExists: Bool
        var crdsReady: Bool
        var health: ReleaseHealth?
        /// The install Job ran before the values last changed: they are not installed yet.
        var valuesPending: Bool
    }

    public static let name = ReconcilerName.alerting
    /// Ordered after helm, but it waits only on its own release.
    public static let dependencies: [ReconcilerName] = [.helm]
    public static let proceedsWhileDependenciesProgress = true
    public var owns: [OwnedResource] {
        [.kubernetesObject("helmchartconfigs, prometheusrules, servicemonitors, services, endpoints, configmaps and secrets labelled \(KubeObject.ownerLabel)=alerting")]
    }

    static let crds = ["prometheusrules.monitoring.coreos.com", "servicemonitors.monitoring.coreos.com"]

    let host: Host
    let cluster: ClusterAccess

    public init(host: Host, cluster: ClusterAccess) {
        self.host = host
        self.cluster = cluster
    }

    public func desired(from platform: Platform) -> Desired? {
        guard let spec = platform.spec.alerting else { return nil }
        return Desired(platform: platform, release: platform.spec.helmReleases?.first { $0.name == spec.release })
    }

    public func observe(_ desired: Desired) async throws -> Observed {
        guard let release = desired.release else {
            throw ReconcileError(.stalled, reason: "NoMonitoringRelease", "spec.alerting.release is not a declared Helm release")
        }
        let api = try cluster.api()
        do {
            let (objects, observed, namespaceExists, ready) = try await objects(desired, release: release, api: api)
            // The values in the HelmChartConfig reach the release only through a new install Job.
            let hcc = objects.first { $0.ref.plural == "helmchartconfigs" }
            let mark = hcc.flatMap { observed.current[$0.ref] }?["metadata"]?["annotations"]?[ReleaseHealth.specAppliedAnnotation]?.string
                .flatMap(Timestamp.init(rfc3339:))
            let job = try await api.getIfPresent(ResourceRef(group: "batch", version: "v1", plural: "jobs", namespace: ClusterRender.helmNamespace,
                                                             name: "helm-install-\(release.name)"))
            let created = job?["metadata"]?["creationTimestamp"]?.string.flatMap(Timestamp.init(rfc3339:))
            let pending = mark.map { mark in created.map { $0 < mark } ?? true } ?? false
            return Observed(objects: objects, cluster: observed, namespaceExists: namespaceExists, crdsReady: ready,
                            health: try await ReleaseHealth.check(release, api: api), valuesPending: pending)
        } catch {
            throw ReconcileError.kube(error, doing: "reading the monitoring objects")
        }
    }

    /// The objects that can be applied now and what the cluster has of them: the
    /// HelmChartConfig always; the rest once the release's namespace exists; the rules and
    /// ServiceMonitor once their CRDs are established. The HelmChartConfig carries the time its
    /// values last changed.
    func objects(_ desired: Desired, release: HelmRelease, api: KubeAPI) async throws
        -> (objects: [KubeObject], observed: ObjectsObservation, namespaceExists: Bool, crdsReady: Bool) {
        let namespace = release.namespace.value
        let namespaceExists = try await api.getIfPresent(ResourceRef(plural: "namespaces", name: namespace)) != nil
        var ready = true
        for name in Self.crds where ready { ready = try await api.isEstablished(crd: name) }
        var objects = try ClusterRender.alerting(desired.platform, secrets: .files(host.files)).filter {
            (ready || $0.ref.group != "monitoring.coreos.com") && (namespaceExists || $0.ref.namespace == ClusterRender.helmNamespace)
        }
        var collections = [ClusterRender.helmChartConfigRef()]
        if namespaceExists {
            collections += ["secrets", "services", "endpoints", "configmaps"].map { ResourceRef(plural: $0, namespace: namespace) }
        }
        if namespaceExists, ready {
            collections += [ClusterRender.prometheusRuleRef(namespace: namespace), ClusterRender.serviceMonitorRef(namespace: namespace)]
        }
        let observed = try await ObjectSync.observe(objects, api: api, owner: Self.name, collections: collections)
        ObjectSync.markChanges(&objects, observed, plural: "helmchartconfigs", now: host.clock.now())
        return (objects, observed, namespaceExists, ready)
    }

    public func plan(_ desired: Desired, _ observed: Observed) throws -> [Change] {
        ObjectSync.plan(observed.objects, observed.cluster)
    }

    public func apply(_ changes: [Change], desired: Desired) async throws {
        guard let release = desired.release else { return }
        let api = try cluster.api()
        do {
            try await ObjectSync.apply(changes, api: api)
        } catch {
            throw ReconcileError.kube(error, doing: "applying the monitoring objects")
        }
    }

    public func verify(_ desired: Desired) async throws -> Condition {
        converged(desired, try await observe(desired))
    }

    public func converged(_ desired: Desired, _ observed: Observed) -> Condition {
        guard observed.namespaceExists else {
            return Condition(.progressing, reason: "WaitingForNamespace",
                             message: "the values (HelmChartConfig) are applied; the rest waits for namespace \(desired.release?.namespace.value ?? "?"), which the chart's install creates")
        }
        guard observed.crdsReady else {
            return Condition(.progressing, reason: "CRDNotEstablished",
                             message: "values, dashboard and scrape target applied; the rules and ServiceMonitor wait for the chart's CRDs (\(Self.crds.joined(separator: ", ")))")
        }
        if let health = observed.health, health.status != .ready {
            return Condition(health.status, reason: health.reason, message: "monitoring release: \(health.message)")
        }
        if observed.valuesPending {
            return Condition(.progressing, reason: "ValuesNotInstalled",
                             message: "waiting for helm-controller to install the release with the new values (a new helm-install Job)")
        }
        let mail = desired.platform.spec.alerting?.email.map { "email to \($0.to.map(\.description).joined(separator: ", "))" } ?? "no email receiver"
        return .ready("Alertmanager config (\(mail)), nodeagent rules, scrape target and dashboard applied")
    }
}
