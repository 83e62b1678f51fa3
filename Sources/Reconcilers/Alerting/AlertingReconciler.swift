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
        var crdsReady: Bool
        var health: ReleaseHealth?
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
            throw ReconcileError(.failed, reason: "NoMonitoringRelease", "spec.alerting.release is not a declared Helm release")
        }
        let api = try cluster.api()
        do {
            var ready = true
            for name in Self.crds where ready { ready = try await api.isEstablished(crd: name) }
            let all = try ClusterRender.alerting(desired.platform, secrets: .files(host.files))
            let objects = all.filter { ready || $0.ref.group != "monitoring.coreos.com" }
            let namespace = release.namespace.value
            var collections = [ClusterRender.helmChartConfigRef()] + ["secrets", "services", "endpoints", "configmaps"].map {
                ResourceRef(plural: $0, namespace: namespace)
            }
            if ready { collections += [ClusterRender.prometheusRuleRef(namespace: namespace), ClusterRender.serviceMonitorRef(namespace: namespace)] }
            let observed = try await ObjectSync.observe(objects, api: api, owner: Self.name, collections: collections)
            return Observed(objects: objects, cluster: observed, crdsReady: ready, health: try await ReleaseHealth.check(release, api: api))
        } catch {
            throw ReconcileError.kube(error, doing: "reading the monitoring objects")
        }
    }

    public func plan(_ desired: Desired, _ observed: Observed) throws -> [Change] {
        ObjectSync.plan(observed.objects, observed.cluster)
    }

    public func apply(_ changes: [Change], desired: Desired) async throws {
        let observed = try await observe(desired)
        try await ObjectSync.apply(changes, desired: observed.objects, api: try cluster.api())
    }

    public func verify(_ desired: Desired) async throws -> Condition {
        converged(desired, try await observe(desired))
    }

    public func converged(_ desired: Desired, _ observed: Observed) -> Condition {
        guard observed.crdsReady else {
            return Condition(.progressing, reason: "CRDNotEstablished",
                             message: "values, dashboard and scrape target applied; the rules and ServiceMonitor wait for the chart's CRDs (\(Self.crds.joined(separator: ", ")))")
        }
        if let health = observed.health, health.status != .ready {
            return Condition(health.status, reason: health.reason, message: "monitoring release: \(health.message)")
        }
        let mail = desired.platform.spec.alerting?.email.map { "email to \($0.to.map(\.description).joined(separator: ", "))" } ?? "no email receiver"
        return .ready("Alertmanager config (\(mail)), nodeagent rules, scrape target and dashboard applied")
    }
}
