import Prometheus
import Reconcilers
import Synchronization

/// The daemon's Prometheus metrics, named by the Prometheus conventions.
final class AgentMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let lastCommit = Mutex<String?>(nil)

    func passFinished(_ entries: [Engine.Entry], converged: Bool, at seconds: Double) {
        for e in entries {
            let result: String
            switch e.outcome {
            case .applied(_, let c): result = c.status == .ready ? "converged" : (c.status == .progressing ? "progressing" : "failed")
            case .failed: result = "failed"
            case .blocked: result = "blocked"
            case .notHandled: result = "not_handled"
            case .notDeclared, .planned: continue
            }
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
        }
        registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "last_pass", unitName: "timestamp_seconds",
                                             helpText: "When the last reconcile pass ended.")).set(to: seconds)
        registry.makeGauge(descriptor: .init(namespace: "nodeagent", metricName: "converged", unitName: "",
                                             helpText: "1 when the last pass converged every declared, handled section.")).set(to: converged ? 1 : 0)
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
}
