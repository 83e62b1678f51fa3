public import KubeClient
public import YAML

extension ClusterRender {
    public static func helmChartConfigRef(_ name: String? = nil) -> ResourceRef {
        ResourceRef(group: "helm.cattle.io", version: "v1", plural: "helmchartconfigs", namespace: helmNamespace, name: name)
    }

    public static func prometheusRuleRef(namespace: String, name: String? = nil) -> ResourceRef {
        ResourceRef(group: "monitoring.coreos.com", version: "v1", plural: "prometheusrules", namespace: namespace, name: name)
    }

    public static func serviceMonitorRef(namespace: String, name: String? = nil) -> ResourceRef {
        ResourceRef(group: "monitoring.coreos.com", version: "v1", plural: "servicemonitors", namespace: namespace, name: name)
    }

    /// The alerting objects, in apply order: the SMTP password Secret, the HelmChartConfig
    /// that feeds the kube-prometheus-stack release its values, nodeagent's PrometheusRule,
    /// the Service, Endpoints and ServiceMonitor through which Prometheus scrapes nodeagent
    /// on the node's VPN address, and the Grafana dashboard.
    public static func alerting(_ platform: Platform, secrets: SecretSource) throws -> [KubeObject] {
        guard let spec = platform.spec.alerting,
              let release = platform.spec.helmReleases?.first(where: { $0.name == spec.release }) else { return [] }
        let namespace = release.namespace.value
        let labels = KubeObject.labels(owner: .alerting)
        func meta(_ name: String, _ ns: String, extra: [JSONValue.Member] = []) -> JSONValue {
            var l = labels
            for m in extra { l[[m.key]] = m.value }
            return .object(["name": .string(name), "namespace": .string(ns), "labels": l])
        }
        // The HelmChartConfig first: it lives in kube-system, which always exists; the rest
        // goes into the release's namespace, which the chart's install creates.
        var out: [KubeObject] = [KubeObject(ref: helmChartConfigRef(release.name.value), body: .object([
            "apiVersion": .string("helm.cattle.io/v1"), "kind": .string("HelmChartConfig"),
            "metadata": meta(release.name.value, helmNamespace),
            "spec": .object(["valuesContent": .string(AlertingConfig.values(spec, heartbeat: platform.spec.section(HeartbeatSpec.self)).yamlText)]),
        ]))]
        if let file = spec.email?.passwordFile {
            let password = try secrets.read(file, for: "alerting.email.passwordFile") ?? ""
            let secret = KubeObject.secret(name: AlertingConfig.secretName, namespace: namespace, owner: .alerting,
                                           data: [("password", Array(password.utf8))])
            if case .files = secrets { out.append(secret) } else {
                out.append(KubeObject.redactedSecret(secret, sources: [("password", SecretSource.placeholder(file))]))
            }
        }
        if let file = platform.spec.section(HeartbeatSpec.self)?.watchdogURLFile {
            let url = try secrets.read(file, for: "heartbeat.watchdogUrlFile") ?? ""
            if case .files = secrets {
                _ = try HeartbeatURL(url, file: file)
                // Alertmanager runs in a pod: its 127.0.0.1 is not the node's.
                guard url.lowercased().hasPrefix("https://") else {
                    throw ReconcileError(.stalled, reason: "HeartbeatURLInvalid", "\(file) (heartbeat.watchdogUrlFile) must hold an https:// URL")
                }
            }
            let secret = KubeObject.secret(name: AlertingConfig.watchdogSecretName, namespace: namespace, owner: .alerting,
                                           data: [("url", Array(url.utf8))])
            if case .files = secrets { out.append(secret) } else {
                out.append(KubeObject.redactedSecret(secret, sources: [("url", SecretSource.placeholder(file))]))
            }
        }
        let release_ = [JSONValue.Member("release", .string(release.name.value))]
        out.append(KubeObject(ref: prometheusRuleRef(namespace: namespace, name: "nodeagent"), body: .object([
            "apiVersion": .string("monitoring.coreos.com/v1"), "kind": .string("PrometheusRule"),
            "metadata": meta("nodeagent", namespace, extra: release_),
            "spec": .object(["groups": AlertingConfig.ruleGroups(platform)]),
        ])))
        // Scraping: pods reach the node's VPN address (the firewall accepts what comes from the
        // pod network on cni0); a loopback-only status server cannot be scraped.
        if let (ip, port) = AlertingConfig.scrapeAddress(platform) {
            let name = [JSONValue.Member("app.kubernetes.io/name", .string("nodeagent"))]
            out.append(KubeObject(ref: ResourceRef(plural: "services", namespace: namespace, name: "nodeagent"), body: .object([
                "apiVersion": .string("v1"), "kind": .string("Service"), "metadata": meta("nodeagent", namespace, extra: name),
                "spec": .object(["clusterIP": .string("None"),
                                 "ports": .array([.object(["name": .string("metrics"), "port": .int(port), "targetPort": .int(port)])])]),
            ])))
            out.append(KubeObject(ref: ResourceRef(plural: "endpoints", namespace: namespace, name: "nodeagent"), body: .object([
                "apiVersion": .string("v1"), "kind": .string("Endpoints"), "metadata": meta("nodeagent", namespace, extra: name),
                "subsets": .array([.object(["addresses": .array([.object(["ip": .string(ip.description)])]),
                                            "ports": .array([.object(["name": .string("metrics"), "port": .int(port)])])])]),
            ])))
            out.append(KubeObject(ref: serviceMonitorRef(namespace: namespace, name: "nodeagent"), body: .object([
                "apiVersion": .string("monitoring.coreos.com/v1"), "kind": .string("ServiceMonitor"),
                "metadata": meta("nodeagent", namespace, extra: release_),
                "spec": .object(["selector": .object(["matchLabels": .object(["app.kubernetes.io/name": .string("nodeagent")])]),
                                 "endpoints": .array([.object(["port": .string("metrics"), "path": .string("/metrics"),
                                                               "interval": .string("30s")])])]),
            ])))
        }
        out.append(KubeObject(ref: ResourceRef(plural: "configmaps", namespace: namespace, name: "nodeagent-dashboard"), body: .object([
            "apiVersion": .string("v1"), "kind": .string("ConfigMap"),
            "metadata": meta("nodeagent-dashboard", namespace, extra: [.init("grafana_dashboard", .string("1"))]),
            "data": .object(["nodeagent.json": .string(AlertingConfig.dashboard().jsonText)]),
        ])))
        return out
    }
}

extension AlertingConfig {
    /// A Grafana dashboard for nodeagent: reconcile results and durations per reconciler, the
    /// applied revision, backup age and size, drill results, WireGuard.
    public static func dashboard() -> JSONValue {
        var id = 0
        func panel(_ title: String, _ type: String, _ exprs: [(String, String)], x: Int, y: Int, w: Int = 12, h: Int = 8,
                   unit: String = "short") -> JSONValue {
            id += 1
            return .object([
                "id": .int(id), "title": .string(title), "type": .string(type),
                "gridPos": .object(["x": .int(x), "y": .int(y), "w": .int(w), "h": .int(h)]),
                "datasource": .object(["type": .string("prometheus"), "uid": .string("${datasource}")]),
                "fieldConfig": .object(["defaults": .object(["unit": .string(unit)]), "overrides": .array([])]),
                "targets": .array(exprs.enumerated().map { i, e in
                    .object(["refId": .string(String(UnicodeScalar(UInt8(65 + i)))), "expr": .string(e.0), "legendFormat": .string(e.1)])
                }),
            ])
        }
        return .object([
            "title": .string("nodeagent"), "uid": .string("nodeagent"), "schemaVersion": .int(39), "version": .int(1),
            "time": .object(["from": .string("now-24h"), "to": .string("now")]), "refresh": .string("1m"),
            "tags": .array([.string("nodeagent")]),
            "templating": .object(["list": .array([.object([
                "name": .string("datasource"), "type": .string("datasource"), "query": .string("prometheus"), "label": .string("Data source"),
            ])])]),
            "panels": .array([
                panel("Reconcilers Ready", "stat", [("nodeagent_reconciler_ready", "{{reconciler}}")], x: 0, y: 0),
                panel("Applied revision", "table", [("nodeagent_applied_revision_info == 1", "{{commit}}")], x: 12, y: 0),
                panel("Reconcile results", "timeseries", [("sum by (reconciler, result) (increase(nodeagent_reconcile_total[15m]))", "{{reconciler}} {{result}}")],
                      x: 0, y: 8),
                panel("Reconcile duration (p90)", "timeseries",
                      [("histogram_quantile(0.9, sum by (reconciler, le) (rate(nodeagent_reconcile_duration_seconds_bucket[15m])))", "{{reconciler}}")],
                      x: 12, y: 8, unit: "s"),
                panel("Backup age", "stat", [("time() - nodeagent_backup_last_success_timestamp_seconds", "{{database}}")], x: 0, y: 16, unit: "s"),
                panel("Backup size", "stat", [("nodeagent_backup_size_bytes", "{{database}}")], x: 12, y: 16, unit: "bytes"),
                panel("Restore drill", "stat", [("nodeagent_restore_drill_last_result_ok", "verified"),
                                                ("time() - nodeagent_restore_drill_last_success_timestamp_seconds", "age")], x: 0, y: 24),
                panel("WireGuard", "stat", [("nodeagent_wireguard_up", "{{interface}} up"),
                                            ("time() - nodeagent_wireguard_peer_last_handshake_timestamp_seconds", "{{peer}} since handshake")],
                      x: 12, y: 24, unit: "s"),
            ]),
        ])
    }
}
