import KubeClient
import YAML

/// Monitoring and email alerting on the kube-prometheus-stack release: its values (through a
/// HelmChartConfig: Alertmanager's email routing, K3s-aware defaults), the SMTP password
/// Secret, the Grafana dashboard and nodeagent's scrape target at once; nodeagent's
/// PrometheusRule and ServiceMonitor once the chart's CRDs are established.
typealias AlertingReconciler = ClusterObjectsReconciler<AlertingObjects>

extension ClusterObjectsReconciler where Section == AlertingObjects {
    init(host: Host, cluster: ClusterAccess) { self.init(AlertingObjects(), host: host, cluster: cluster) }
}

struct AlertingObjects: ClusterSection {
    struct Desired: Sendable, Equatable {
        var platform: Platform
        var release: HelmRelease?
    }

    struct Facts: Sendable {
        var namespaceExists: Bool
        var crdsReady: Bool
        var health: ReleaseHealth?
        /// The install Job ran before the values last changed: they are not installed yet.
        var valuesPending: Bool
    }

    static let name = ReconcilerName.alerting
    /// Ordered after helm, but it waits only on its own release.
    static let dependencies: [ReconcilerName] = [.helm]
    static let proceedsWhileDependenciesProgress = true
    var owns: [OwnedResource] {
        [.kubernetesObject("helmchartconfigs, prometheusrules, servicemonitors, services, endpoints, configmaps and secrets labelled \(KubeObject.ownerLabel)=alerting")]
    }
    var objectsName: String { "the monitoring objects" }

    static let crds = ["prometheusrules.monitoring.coreos.com", "servicemonitors.monitoring.coreos.com"]

    func desired(from platform: Platform) -> Desired? {
        guard let spec = platform.spec.alerting else { return nil }
        return Desired(platform: platform, release: platform.spec.helmReleases?.first { $0.name == spec.release })
    }

    func release(_ desired: Desired) throws -> HelmRelease {
        guard let release = desired.release else {
            throw ReconcileError(.stalled, reason: "NoMonitoringRelease", "spec.alerting.release is not a declared Helm release")
        }
        return release
    }

    /// What can be applied now: the HelmChartConfig always; the rest once the release's
    /// namespace exists; the rules and ServiceMonitor once their CRDs are established.
    func readiness(_ release: HelmRelease, api: KubeAPI) async throws -> (namespaceExists: Bool, crdsReady: Bool) {
        let namespaceExists = try await api.getIfPresent(ResourceRef(plural: "namespaces", name: release.namespace.value)) != nil
        var ready = true
        for name in Self.crds where ready { ready = try await api.isEstablished(crd: name) }
        return (namespaceExists, ready)
    }

    typealias Context = (namespaceExists: Bool, crdsReady: Bool)

    func objects(_ desired: Desired, host: Host, api: KubeAPI) async throws -> (objects: [KubeObject], collections: [ResourceRef], context: Context) {
        let release = try release(desired)
        let namespace = release.namespace.value
        let (namespaceExists, ready) = try await readiness(release, api: api)
        let objects = try ClusterRender.alerting(desired.platform, secrets: .files(host.files)).filter {
            (ready || $0.ref.group != "monitoring.coreos.com") && (namespaceExists || $0.ref.namespace == ClusterRender.helmNamespace)
        }
        var collections = [ClusterRender.helmChartConfigRef()]
        if namespaceExists {
            collections += ["secrets", "services", "endpoints", "configmaps"].map { ResourceRef(plural: $0, namespace: namespace) }
        }
        if namespaceExists, ready {
            collections += [ClusterRender.prometheusRuleRef(namespace: namespace), ClusterRender.serviceMonitorRef(namespace: namespace)]
        }
        return (objects, collections, (namespaceExists, ready))
    }

    /// The HelmChartConfig carries the time its values last changed.
    func mark(_ objects: inout [KubeObject], _ observed: ObjectsObservation, now: Timestamp) {
        ObjectSync.markChanges(&objects, observed, plural: "helmchartconfigs", now: now)
    }

    func facts(_ desired: Desired, context: Context, objects: [KubeObject], observed: ObjectsObservation, api: KubeAPI) async throws -> Facts {
        let release = try release(desired)
        let (namespaceExists, ready) = context
        // The values in the HelmChartConfig reach the release only through a new install Job.
        let hcc = objects.first { $0.ref.plural == "helmchartconfigs" }
        let mark = hcc.flatMap { observed.current[$0.ref] }?["metadata"]?["annotations"]?[ReleaseHealth.specAppliedAnnotation]?.string
            .flatMap(Timestamp.init(rfc3339:))
        let job = try await api.getIfPresent(ResourceRef(group: "batch", version: "v1", plural: "jobs", namespace: ClusterRender.helmNamespace,
                                                         name: "helm-install-\(release.name)"))
        let created = job?["metadata"]?["creationTimestamp"]?.string.flatMap(Timestamp.init(rfc3339:))
        let pending = mark.map { mark in created.map { $0 < mark } ?? true } ?? false
        return Facts(namespaceExists: namespaceExists, crdsReady: ready, health: try await ReleaseHealth.check(release, api: api),
                     valuesPending: pending)
    }

    func condition(_ desired: Desired, _ observed: Facts) -> Condition {
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
