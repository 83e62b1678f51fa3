import Prometheus
import Reconcilers
import Synchronization

/// The daemon's Prometheus metrics, named by the Prometheus conventions.
final class AgentMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let lastCommit = Mutex<String?>(nil)

    /// The Prometheus text exposition of every metric, as `GET /metrics` serves it.
    func exposition() -> [UInt8] { registry.emitToBuffer() }

    func passFinished(_ pass: PassResult, at seconds: Double) {
        for e in pass {
            let result: String
            switch e.outcome.verdict {
            case .converged: result = "converged"
            case .progressing, .awaitingOperator: result = "progressing"
            case .failed: result = "failed"
            case .stalled: result = "stalled"
            case .blocked: result = "blocked"
            case .notHandled: result = "not_handled"
            case .pending: continue
            }
            if case .notDeclared = e.outcome { continue }
            // Sat the pass out (backoff): its gauges keep what its last run set.
            if case .resting = e.outcome { continue }
            registry.makeCounter(descriptor: .init(namespace: "nodeagent", metricName: "reconcile", unitName: "total",
                                                   helpText: "Reconciler passes by outcome."),
                                 labels: [("reconciler", e.name.rawValue), ("result", result)]).increment()
            registry.makeDurationHistogram(descriptor: .init(namespace: "nodeagent", metricName: "reconcile_duration", unitName: "seconds",
                                                             helpText: "Time one reconciler took in a pass."),
                                           labels: [("reconciler", e.name.rawValue)],
                                           buckets: [.milliseconds(5), .milliseconds(25), .milliseconds(100), .milliseconds(500),
                                                     .seconds(2), .seconds(10), .seconds(60)])
                .record(.nanoseconds(Int64(e.seconds * 1e9)))
            registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "reconciler_ready", unitName: "",
                                                 helpText: "1 when the reconciler's last pass ended Ready."),
                               labels: [("reconciler", e.name.rawValue)]).set(to: result == "converged" ? 1 : 0)
            registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "reconciler_stalled", unitName: "",
                                                 helpText: "1 when the reconciler's last pass needs a person: retrying cannot help."),
                               labels: [("reconciler", e.name.rawValue)]).set(to: result == "stalled" || result == "not_handled" ? 1 : 0)
        }
        registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "last_pass", unitName: "timestamp_seconds",
                                             helpText: "When the last reconcile pass ended.")).set(to: seconds)
        registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "converged", unitName: "",
                                             helpText: "1 when the last pass converged every declared, handled section.")).set(to: pass.converged ? 1 : 0)
    }

    /// The last provider snapshot (`backup snapshot`, the schedule).
    func providerSnapshot(_ record: ProviderSnapshotRecord) {
        registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "provider_snapshot_last_result_ok", unitName: "",
                                             helpText: "1 when the last provider snapshot succeeded.")).set(to: record.ok ? 1 : 0)
        if let success = record.lastSuccess {
            registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "provider_snapshot_last_success", unitName: "timestamp_seconds",
                                                 helpText: "When the newest provider snapshot was taken."))
                .set(to: Double(success.millisecondsSinceEpoch) / 1000)
        }
    }

    /// The off-site copy, check and prune as the record says.
    func offsite(_ record: OffsiteRecord) {
        func gauge(_ name: String, _ unit: String, _ help: String, _ value: Double) {
            registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: name, unitName: unit, helpText: help)).set(to: value)
        }
        func seconds(_ t: Timestamp) -> Double { Double(t.millisecondsSinceEpoch) / 1000 }
        if let copy = record.copy {
            gauge("offsite_last_result_ok", "", "1 when the last off-site copy succeeded.", copy.ok ? 1 : 0)
        }
        // 0 before the first good copy: a node that never got one off is as overdue as can be.
        gauge("offsite_last_success", "timestamp_seconds", "When the newest off-site snapshot was made (0: never).",
              record.copy?.lastSuccess.map(seconds) ?? 0)
        if let added = record.addedBytes {
            gauge("offsite_last_added", "bytes", "Bytes the last good off-site copy added to the repository (after deduplication).", Double(added))
        }
        if let check = record.check {
            gauge("offsite_check_ok", "", "1 when the last restic check of the off-site repository found it sound.", check.ok ? 1 : 0)
            gauge("offsite_check_last_run", "timestamp_seconds", "When restic last checked the off-site repository.", seconds(check.at))
        }
        if let prune = record.prune {
            gauge("offsite_prune_ok", "", "1 when the last restic prune of the off-site repository succeeded.", prune.ok ? 1 : 0)
        }
    }

    /// One heartbeat ping attempt; `at` when it got through.
    func heartbeat(ok: Bool, at time: Timestamp?) {
        registry.makeCounter(descriptor: .init(namespace: "nodeagent", metricName: "heartbeat_pings", unitName: "total",
                                               helpText: "Heartbeat ping attempts by result (a failed one is retried twice)."),
                             labels: [("result", ok ? "ok" : "failed")]).increment()
        if let time {
            registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "heartbeat_last_success", unitName: "timestamp_seconds",
                                                 helpText: "When a heartbeat ping last got through."))
                .set(to: Double(time.millisecondsSinceEpoch) / 1000)
        }
    }

    func source(ok: Bool) {
        registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "source_up", unitName: "",
                                             helpText: "1 when the last fetch gave a valid, verified revision.")).set(to: ok ? 1 : 0)
    }

    func applied(commit: String) {
        // One series reads 1: the previous revision's goes to 0.
        if let previous = lastCommit.withLock({ c -> String? in let p = c; c = commit; return p }), previous != commit {
            registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "applied_revision", unitName: "info",
                                                 helpText: "The commit of the applied desired state."),
                               labels: [("commit", previous)]).set(to: 0)
        }
        registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "applied_revision", unitName: "info",
                                             helpText: "The commit of the applied desired state."),
                           labels: [("commit", commit)]).set(to: 1)
    }

    /// The backups' and drills' figures, from the state file.
    func backups(_ state: BackupState) {
        for (database, r) in state.databases {
            let labels = [("database", database)]
            if let success = r.lastSuccess {
                registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "backup_last_success", unitName: "timestamp_seconds",
                                                     helpText: "When the last good dump of the database finished."),
                                   labels: labels).set(to: Double(success.millisecondsSinceEpoch) / 1000)
            }
            registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "backup_duration", unitName: "seconds",
                                                 helpText: "How long the last dump of the database took."),
                               labels: labels).set(to: r.durationSeconds)
            registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "backup_size", unitName: "bytes",
                                                 helpText: "The size of the last good dump of the database."),
                               labels: labels).set(to: Double(r.sizeBytes))
            registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "backup_last_result_ok", unitName: "",
                                                 helpText: "1 when the last dump of the database succeeded."),
                               labels: labels).set(to: r.ok ? 1 : 0)
        }
        if let drill = state.drill {
            if let success = drill.lastSuccess {
                registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "restore_drill_last_success", unitName: "timestamp_seconds",
                                                     helpText: "When the last restore drill verified the newest dumps."))
                    .set(to: Double(success.millisecondsSinceEpoch) / 1000)
            }
            registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "restore_drill_last_result_ok", unitName: "",
                                                 helpText: "1 when the last restore drill verified; 0 when it failed."))
                .set(to: drill.ok ? 1 : 0)
        }
        for (key, count) in state.failures {
            let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
            registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "backup_failures", unitName: "",
                                                 helpText: "Failed backup, roles and drill runs by job and reason, since the state file began."),
                               labels: [("job", parts.first ?? key), ("reason", parts.count > 1 ? parts[1] : "")]).set(to: Double(count))
        }
    }

    func wireguard(interface: String, up: Bool, handshakes: [(peer: String, at: Double)]) {
        registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "wireguard_up", unitName: "",
                                             helpText: "1 when the WireGuard interface exists and is up."),
                           labels: [("interface", interface)]).set(to: up ? 1 : 0)
        for h in handshakes {
            registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "wireguard_peer_last_handshake", unitName: "timestamp_seconds",
                                                 helpText: "When the peer last completed a handshake."),
                               labels: [("interface", interface), ("peer", h.peer)]).set(to: h.at)
        }
    }

    func k3sCertificates(_ expiries: [(file: String, at: Double)]) {
        for e in expiries {
            registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "k3s_certificate_expiry", unitName: "timestamp_seconds",
                                                 helpText: "When a K3s certificate (under /var/lib/rancher/k3s: server/tls, agent) expires."),
                               labels: [("file", e.file)]).set(to: e.at)
        }
    }
}
