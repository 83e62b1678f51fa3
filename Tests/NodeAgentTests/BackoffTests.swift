import Testing
import Reconcilers
@testable import NodeAgent

@Suite("Per-reconciler backoff")
struct BackoffTests {
    @Test func failuresDoubleTheRestUpToTheCapAndSuccessClearsIt() {
        var b = Backoff()
        let t0 = Timestamp(millisecondsSinceEpoch: 1_000_000)
        b.record("k3s", failed: true, at: t0)
        #expect(b.isWaiting("k3s", at: t0.adding(TimeSpan(milliseconds: 9_999))))
        #expect(!b.isWaiting("k3s", at: t0.adding(TimeSpan(milliseconds: 10_000))))
        #expect(!b.isWaiting("helm", at: t0), "only the failed reconciler rests")
        b.record("k3s", failed: true, at: t0)
        #expect(b.isWaiting("k3s", at: t0.adding(TimeSpan(milliseconds: 19_999))))
        for _ in 0..<30 { b.record("k3s", failed: true, at: t0) }
        #expect(b.isWaiting("k3s", at: t0.adding(TimeSpan(milliseconds: 599_999))))
        #expect(!b.isWaiting("k3s", at: t0.adding(TimeSpan(milliseconds: 600_000))), "capped at 10 minutes")
        b.record("k3s", failed: false, at: t0)
        #expect(!b.isWaiting("k3s", at: t0) && b.failureCount("k3s") == 0)
        b.record("os", failed: true, at: t0)
        b.reset()
        #expect(!b.isWaiting("os", at: t0))
    }
}
