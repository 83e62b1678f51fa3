import Reconcilers

/// Per-reconciler backoff, read from the pass result: after each failure in a row, a
/// reconciler sits out the next passes for twice as long as before (10 s, 20 s, … up to
/// 10 min). A stalled one (a person must act: retrying the same thing cannot help) sits out
/// the longest at once. A new revision or an explicit `POST /sync` clears it.
struct Backoff: Sendable {
    var base = TimeSpan(milliseconds: 10_000)
    var cap = TimeSpan(milliseconds: 600_000)
    private var failures: [String: Int] = [:]
    private var until: [String: Timestamp] = [:]
    private var conditions: [String: Condition] = [:]

    /// Folds one reconciler's outcome in: a failure extends its rest, a run that did not fail
    /// clears it, and a resting one keeps what it has.
    mutating func record(_ name: String, _ outcome: Engine.Outcome, at now: Timestamp) {
        switch outcome {
        // Not run: a resting one keeps its rest; one blocked behind it (or behind another
        // failure) keeps whatever it had, as it did not try.
        case .resting, .blocked: return
        case .failed(let c) where outcome.ranAndFailed, .applied(_, let c) where outcome.ranAndFailed:
            record(name, failed: c, at: now)
        default: record(name, failed: nil, at: now)
        }
    }

    mutating func record(_ name: String, failed condition: Condition?, at now: Timestamp) {
        guard let condition else {
            failures[name] = nil
            until[name] = nil
            conditions[name] = nil
            return
        }
        let n = (failures[name] ?? 0) + 1
        failures[name] = n
        let wait = condition.status == .stalled ? cap.milliseconds : min(base.milliseconds << min(n - 1, 20), cap.milliseconds)
        until[name] = now.adding(TimeSpan(milliseconds: wait))
        conditions[name] = condition
    }

    func isWaiting(_ name: String, at now: Timestamp) -> Bool {
        until[name].map { now < $0 } ?? false
    }

    /// The reconcilers that sit this pass out, with the condition each failed with.
    func resting(at now: Timestamp) -> [ReconcilerName: Condition] {
        var out: [ReconcilerName: Condition] = [:]
        for (name, condition) in conditions where isWaiting(name, at: now) { out[ReconcilerName(rawValue: name)] = condition }
        return out
    }

    func failureCount(_ name: String) -> Int { failures[name] ?? 0 }

    /// When each resting reconciler tries again.
    func retryTimes(at now: Timestamp) -> [String: Timestamp] { until.filter { now < $0.value } }

    mutating func reset() {
        failures = [:]
        until = [:]
        conditions = [:]
    }
}
