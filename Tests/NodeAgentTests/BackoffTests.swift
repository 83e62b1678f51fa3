import Testing
import Reconcilers
@testable import NodeAgent

@Suite("Per-reconciler backoff")
struct BackoffTests {
    static let broke = Condition(.failed, reason: "APIError", message: "the server went away")

    @Test func failuresDoubleTheRestUpToTheCapAndSuccessClearsIt() {
        var b = Backoff()
        let t0 = Timestamp(millisecondsSinceEpoch: 1_000_000)
        b.record("k3s", failed: Self.broke, at: t0)
        #expect(b.isWaiting("k3s", at: t0.adding(TimeSpan(milliseconds: 9_999))))
        #expect(!b.isWaiting("k3s", at: t0.adding(TimeSpan(milliseconds: 10_000))))
        #expect(!b.isWaiting("helm", at: t0), "only the failed reconciler rests")
        b.record("k3s", failed: Self.broke, at: t0)
        #expect(b.isWaiting("k3s", at: t0.adding(TimeSpan(milliseconds: 19_999))))
        for _ in 0..<30 { b.record("k3s", failed: Self.broke, at: t0) }
        #expect(b.isWaiting("k3s", at: t0.adding(TimeSpan(milliseconds: 599_999))))
        #expect(!b.isWaiting("k3s", at: t0.adding(TimeSpan(milliseconds: 600_000))), "capped at 10 minutes")
        b.record("k3s", failed: nil, at: t0)
        #expect(!b.isWaiting("k3s", at: t0) && b.failureCount("k3s") == 0)
        b.record("os", failed: Self.broke, at: t0)
        b.reset()
        #expect(!b.isWaiting("os", at: t0))
    }

    /// Read from the pass result: a stalled reconciler rests the longest at once, a resting
    /// one keeps its rest and its condition, anything that ran without failing is cleared.
    @Test func thePassResultDecidesTheRest() {
        var b = Backoff()
        let t0 = Timestamp(millisecondsSinceEpoch: 1_000_000)
        let stalled = Condition(.stalled, reason: "NoSuchUser", message: "user deploy does not exist on this node")
        b.record("os", .failed(stalled), at: t0)
        #expect(b.isWaiting("os", at: t0.adding(TimeSpan(milliseconds: 599_999))), "a person must act: no quick retries")
        #expect(b.resting(at: t0) == [.os: stalled])
        b.record("os", .resting(stalled), at: t0.adding(TimeSpan(milliseconds: 1000)))
        #expect(b.failureCount("os") == 1 && b.resting(at: t0) == [.os: stalled])
        b.record("helm", .failed(Condition(.progressing, reason: "CRDNotServed")), at: t0)
        #expect(!b.isWaiting("helm", at: t0), "waiting is not failing")
        b.record("k3s", .applied([], Self.broke), at: t0)
        #expect(b.isWaiting("k3s", at: t0) && !b.isWaiting("k3s", at: t0.adding(TimeSpan(milliseconds: 10_000))))
        b.record("k3s", .blocked(by: .os), at: t0)
        #expect(b.isWaiting("k3s", at: t0) && b.failureCount("k3s") == 1, "blocked, it did not try: its rest stays")
        #expect(b.retryTimes(at: t0)["k3s"] == t0.adding(TimeSpan(milliseconds: 10_000)))
    }
}
