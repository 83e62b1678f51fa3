import Reconcilers
import YAML

/// What the daemon knows about itself, for `/status`, `/readyz` and the metrics: the source,
/// the applied revision, one condition per reconciler, and a bounded ring of recent events.
actor AgentStatus {
    struct ConditionRecord: Sendable {
        var condition: Condition
        var verdict: PassResult.Verdict
        /// Sat the last pass out (backoff), and when it tries again.
        var resting: Bool
        var retryAt: Timestamp?
        var since: Timestamp
        var lastPlan: [String]
    }

    struct Event: Sendable {
        var at: Timestamp
        var reconciler: String?
        var message: String
    }

    private let clock: any WallClock
    private(set) var sourceCommit: String?
    private(set) var sourceError: SourceError?
    private(set) var appliedCommit: String?
    private(set) var appliedName: String?
    private(set) var conditions: [String: ConditionRecord] = [:]
    private(set) var order: [String] = []
    private(set) var events: [Event] = []
    private(set) var lastPassConverged = false
    private(set) var lastPassVerdict: PassResult.Verdict?
    private(set) var lastPassAt: Timestamp?
    private(set) var passes = 0
    struct HeartbeatRecord: Sendable {
        var interval: TimeSpan
        var lastSuccess: Timestamp?
        var lastAttempt: Timestamp
        var signal: String
        var ok: Bool
        var failedPings: Int
        var why: String?
    }
    /// The dead-man's switch: when it last got through, never where to.
    private(set) var heartbeatRecord: HeartbeatRecord?

    func heartbeat(ok: Bool, signal: Heartbeat.Signal, at time: Timestamp, interval: TimeSpan, why: String?) {
        var r = heartbeatRecord ?? HeartbeatRecord(interval: interval, lastAttempt: time, signal: signal.rawValue, ok: ok, failedPings: 0)
        r.interval = interval
        r.lastAttempt = time
        r.signal = signal.rawValue
        r.ok = ok
        r.why = why
        if ok { r.lastSuccess = time } else { r.failedPings += 1 }
        if ok != heartbeatRecord?.ok { record(event: ok ? "heartbeat: ping (\(signal.rawValue)) got through" : "heartbeat: ping failed: \(why ?? "")") }
        heartbeatRecord = r
    }

    /// The last provider snapshot (`backups/provider-snapshot.json`), as the last pass read it.
    private(set) var providerSnapshotRecord: ProviderSnapshotRecord?

    func providerSnapshot(_ record: ProviderSnapshotRecord?) { providerSnapshotRecord = record }

    private(set) var offsiteRecord: (record: OffsiteRecord, repository: String)?
    private(set) var recoveryRecord: RecoveryRecord?

    /// The off-site copy (nil when not declared) and the recovery this node went through.
    func offsite(_ offsite: (OffsiteRecord, String)?, recovery: RecoveryRecord?) {
        offsiteRecord = offsite
        recoveryRecord = recovery
    }

    /// The reconcilers whose last condition is Failed or Stalled (or that wait on a person).
    func failing() -> [(name: String, condition: Condition)] {
        order.compactMap { name in
            guard let r = conditions[name], r.verdict == .failed || r.verdict.needsHuman else { return nil }
            return (name, r.condition)
        }
    }

    /// Shown in /status: nothing secret (public keys only).
    private(set) var wireguardPublicKey: String?
    static let maxEvents = 100

    init(clock: any WallClock) {
        self.clock = clock
    }

    func record(event message: String, reconciler: String? = nil) {
        events.append(Event(at: clock.now(), reconciler: reconciler, message: message))
        if events.count > Self.maxEvents { events.removeFirst(events.count - Self.maxEvents) }
    }

    func sourceSucceeded(commit: String) {
        if sourceError != nil { record(event: "source recovered at \(commit.prefix(12))") }
        sourceCommit = commit
        sourceError = nil
    }

    func sourceFailed(_ error: SourceError) {
        if sourceError?.description != error.description { record(event: "source: \(error.reason.rawValue): \(error.message)") }
        sourceError = error
        if let commit = error.commit { sourceCommit = commit }
    }

    func applied(commit: String?, name: String) {
        if appliedCommit != commit, let commit { record(event: "applied \(commit.prefix(12))") }
        appliedCommit = commit
        appliedName = name
    }

    /// Folds one pass's outcome into the conditions, keeping each one's last transition time.
    /// - Parameter retryAt: when each reconciler in its backoff tries again.
    func finishPass(_ result: PassResult, retryAt: [String: Timestamp] = [:]) {
        passes += 1
        lastPassConverged = result.converged
        lastPassVerdict = result.verdict
        lastPassAt = clock.now()
        for entry in result {
            let (condition, plan) = Self.condition(of: entry.outcome)
            let name = entry.name.rawValue
            if !order.contains(name) { order.append(name) }
            // A structured fact of WireGuard's condition, not parsed out of its message.
            if let key = condition.facts[Condition.wireguardPublicKey] { wireguardPublicKey = key }
            let previous = conditions[name]
            let changed = previous?.condition.status != condition.status || previous?.condition.reason != condition.reason
            if changed { record(event: "\(condition.status.rawValue): \(condition.reason)\(condition.message.isEmpty ? "" : ": \(condition.message)")", reconciler: name) }
            var resting = false
            if case .resting = entry.outcome { resting = true }
            conditions[name] = ConditionRecord(condition: condition, verdict: entry.outcome.verdict, resting: resting, retryAt: retryAt[name],
                                               since: changed ? clock.now() : previous!.since,
                                               lastPlan: plan.isEmpty ? previous?.lastPlan ?? [] : plan)
        }
    }

    static func condition(of outcome: Engine.Outcome) -> (Condition, [String]) {
        switch outcome {
        case .applied(let changes, let c): return (c, changes.map { "\($0.action.symbol) \($0.subject)\($0.detail.map { " \($0)" } ?? "")" })
        case .failed(let c), .resting(let c): return (c, [])
        case .planned(let changes): return (.ready(), changes.map(\.subject))
        case .blocked(let by): return (Condition(.failed, reason: "Blocked", message: "\(by) failed"), [])
        case .notHandled(let section): return (Condition(.progressing, reason: "NotHandled", message: "no reconciler for spec.\(section) in this build"), [])
        case .notDeclared: return (Condition(.ready, reason: "NotDeclared", message: "not managed"), [])
        }
    }

    var json: JSONValue {
        func time(_ t: Timestamp?) -> JSONValue { t.map { .double(Double($0.millisecondsSinceEpoch) / 1000) } ?? .null }
        var source: [JSONValue.Member] = [.init("commit", sourceCommit.map(JSONValue.string) ?? .null),
                                          .init("ok", .bool(sourceError == nil))]
        if let e = sourceError {
            source.append(.init("reason", .string(e.reason.rawValue)))
            source.append(.init("message", .string(e.message)))
            source.append(.init("errors", .array(e.diagnostics.map { .string($0.description) })))
        }
        var reconcilers: [JSONValue] = []
        for name in order {
            guard let r = conditions[name] else { continue }
            let members: [JSONValue.Member] = [
                .init("name", .string(name)), .init("status", .string(r.condition.status.rawValue)),
                .init("verdict", .string(r.verdict.rawValue)), .init("reason", .string(r.condition.reason)),
                .init("message", .string(r.condition.message)), .init("lastTransition", time(r.since)),
                .init("lastPlan", .array(r.lastPlan.map(JSONValue.string))),
                .init("resting", .bool(r.resting)), .init("retryAt", time(r.retryAt)),
            ]
            reconcilers.append(.object(members))
        }
        let heartbeat: JSONValue = heartbeatRecord.map { h in
            .object([.init("interval", .double(Double(h.interval.milliseconds) / 1000)), .init("lastSuccess", time(h.lastSuccess)),
                     .init("lastAttempt", time(h.lastAttempt)), .init("signal", .string(h.signal)), .init("ok", .bool(h.ok)),
                     .init("failedPings", .int(h.failedPings)), .init("error", h.why.map(JSONValue.string) ?? .null)])
        } ?? .null
        let snapshot: JSONValue = providerSnapshotRecord.map { r in
            let age: JSONValue = r.lastSuccess.map { .double(Double(clock.now().millisecondsSinceEpoch - $0.millisecondsSinceEpoch) / 1000) } ?? .null
            return .object([.init("lastSuccess", time(r.lastSuccess)), .init("ageSeconds", age), .init("lastAttempt", time(r.at)),
                            .init("ok", .bool(r.ok)), .init("id", r.id.map(JSONValue.string) ?? .null), .init("reason", .string(r.reason)),
                            .init("message", .string(r.message))])
        } ?? .null
        let offsite: JSONValue = offsiteRecord.map { $0.record.statusJSON(now: clock.now(), repository: $0.repository) } ?? .null
        let recovery: JSONValue = recoveryRecord?.json ?? .null
        let needsHuman = JSONValue.array(order.filter { conditions[$0]?.verdict.needsHuman == true }.map(JSONValue.string))
        let verdict: JSONValue = lastPassVerdict.map { .string($0.rawValue) } ?? .null
        return .object([
            "applied": .object(["commit": appliedCommit.map(JSONValue.string) ?? .null, "name": appliedName.map(JSONValue.string) ?? .null]),
            "source": .object(source),
            "converged": .bool(lastPassConverged),
            // The worst verdict of the last pass; `Stalled` (or `NotHandled`) means a person must act.
            "verdict": verdict,
            "needsHuman": needsHuman,
            "heartbeat": heartbeat,
            "providerSnapshot": snapshot,
            "offsite": offsite,
            "recovery": recovery,
            "lastPass": time(lastPassAt),
            "passes": .int(passes),
            "wireguard": .object(["publicKey": wireguardPublicKey.map(JSONValue.string) ?? .null]),
            "reconcilers": .array(reconcilers),
            "events": .array(events.suffix(50).map { e in
                .object(["at": time(e.at), "reconciler": e.reconciler.map(JSONValue.string) ?? .null, "message": .string(e.message)])
            }),
        ])
    }
}
