import Reconcilers

/// Per-reconciler exponential backoff: after each failure in a row, a reconciler sits out the
/// next passes for twice as long as before (10 s, 20 s, … up to 10 min). A new revision or an
/// explicit `POST /sync` clears it.
struct Backoff: Sendable {
    var base = TimeSpan(milliseconds: 10_000)
    var cap = TimeSpan(milliseconds: 600_000)
    private var failures: [String: Int] = [:]
    private var until: [String: Timestamp] = [:]

    mutating func record(_ name: String, failed: Bool, at now: Timestamp) {
        guard failed else {
            failures[name] = nil
            until[name] = nil
            return
        }
        let n = (failures[name] ?? 0) + 1
        failures[name] = n
        let wait = min(base.milliseconds << min(n - 1, 20), cap.milliseconds)
        until[name] = now.adding(TimeSpan(milliseconds: wait))
    }

    func isWaiting(_ name: String, at now: Timestamp) -> Bool {
        until[name].map { now < $0 } ?? false
    }

    func failureCount(_ name: String) -> Int { failures[name] ?? 0 }

    mutating func reset() {
        failures = [:]
        until = [:]
    }
}
