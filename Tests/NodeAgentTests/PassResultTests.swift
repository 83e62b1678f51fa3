import Foundation
import Logging
import Testing
import TestSupport
import Reconcilers
import YAML
import Synchronization
@testable import NodeAgent

/// The daemon's loop reads one pass result: /status, /metrics and the backoff agree on what a
/// stalled reconciler is, on a manual clock.
@Suite("One pass result: stalled, resting, needs a person")
struct PassResultTests {
    final class Cell<T: Sendable>: Sendable {
        private let value: Mutex<T>
        init(_ v: T) { value = Mutex(v) }
        func withLock<R>(_ body: (inout T) -> R) -> R { value.withLock { body(&$0) } }
    }

    /// Needs a user the node does not have: a person must act. Counts its runs.
    struct NeedsUser: Reconciler {
        static let name = ReconcilerName.os
        static let dependencies: [ReconcilerName] = []
        let runs: Cell<Int>
        let userExists: Cell<Bool>
        var owns: [OwnedResource] { [] }
        func desired(from platform: Platform) -> Bool? { platform.spec.os == nil ? nil : true }
        func observe(_ desired: Bool) async throws -> Bool {
            runs.withLock { $0 += 1 }
            guard userExists.withLock({ $0 }) else {
                throw ReconcileError(.stalled, reason: "NoSuchUser", "user deploy does not exist on this node")
            }
            return true
        }
        func plan(_ desired: Bool, _ observed: Bool) throws -> [Change] { [] }
        func apply(_ changes: [Change], desired: Bool) async throws {}
        func verify(_ desired: Bool) async throws -> Condition { .ready() }
    }

    /// Depends on os; counts its runs.
    struct Dependent: Reconciler {
        static let name = ReconcilerName.firewall
        static let dependencies: [ReconcilerName] = [.os]
        let runs: Cell<Int>
        var owns: [OwnedResource] { [] }
        func desired(from platform: Platform) -> Bool? { platform.spec.firewall == nil ? nil : true }
        func observe(_ desired: Bool) async throws -> Bool { runs.withLock { $0 += 1 }; return true }
        func plan(_ desired: Bool, _ observed: Bool) throws -> [Change] { [] }
        func apply(_ changes: [Change], desired: Bool) async throws {}
        func verify(_ desired: Bool) async throws -> Condition { .ready() }
    }

    @Test func aStalledReconcilerIsOneVerdictEverywhereAndRestsTheLongest() async throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let state = root + "/platform.yaml"
        try """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: vps-1}
            spec:
              os: {}
              firewall: {publicInterface: eth0}

            """.write(toFile: state, atomically: true, encoding: .utf8)
        let clock = ManualWallClock(now: Timestamp(millisecondsSinceEpoch: 1_000_000_000))
        let host = Host(files: RootedFileSystem(root: root), commands: SystemCommandRunner(),
                        services: SystemdServiceManager(commands: SystemCommandRunner(), root: root), clock: clock)
        let osRuns = Cell(0), fwRuns = Cell(0), exists = Cell(false)
        let engine = try Engine([AnyReconciler(NeedsUser(runs: osRuns, userExists: exists)), AnyReconciler(Dependent(runs: fwRuns))], clock: clock)
        let rig = TestLoop(state: state, engine: engine, host: host)
        let (loop, status, metrics) = (rig.loop, rig.status, rig.metrics)
        func statusJSON() async -> JSONValue { await status.json }
        func metricsText() -> String { String(decoding: metrics.exposition(), as: UTF8.self) }

        await loop.pass()
        var s = await statusJSON()
        #expect(s["converged"] == .bool(false) && s["verdict"]?.string == "Stalled", "\(s)")
        #expect(s["needsHuman"] == .array([.string("os")]), "\(s)")
        let os = s["reconcilers"]?.array?.first { $0["name"]?.string == "os" }
        #expect(os?["status"]?.string == "Stalled" && os?["verdict"]?.string == "Stalled" && os?["reason"]?.string == "NoSuchUser")
        let fw = s["reconcilers"]?.array?.first { $0["name"]?.string == "firewall" }
        #expect(fw?["verdict"]?.string == "Blocked" && fw?["reason"]?.string == "Blocked", "the dependent names its blocker, not a cause of its own")
        var text = metricsText()
        #expect(text.contains("nodeagent_reconciler_stalled{reconciler=\"os\"} 1"), "\(text)")
        #expect(text.contains("nodeagent_reconcile_total{reconciler=\"os\",result=\"stalled\"} 1"), "\(text)")
        #expect(text.contains("nodeagent_converged 0"))
        #expect(osRuns.withLock { $0 } == 1 && fwRuns.withLock { $0 } == 0)

        // A failed reconciler would be retried after 10 s; a stalled one rests 10 minutes.
        exists.withLock { $0 = true }
        var elapsed = 0
        for minutes in [1, 5, 9] {
            clock.advance(by: TimeSpan(milliseconds: Int64(minutes - elapsed) * 60_000))
            elapsed = minutes
            await loop.pass()
            #expect(osRuns.withLock { $0 } == 1, "retried at \(minutes) min")
        }
        s = await statusJSON()
        #expect(s["verdict"]?.string == "Stalled" && s["needsHuman"] == .array([.string("os")]), "a resting reconciler keeps its verdict: \(s)")
        let resting = s["reconcilers"]?.array?.first { $0["name"]?.string == "os" }
        #expect(resting?["resting"] == .bool(true) && resting?["retryAt"] == .double(1_000_000.0 + 600), "rests until 10 min after its failure: \(String(describing: resting))")
        text = metricsText()
        #expect(text.contains("nodeagent_reconcile_total{reconciler=\"os\",result=\"stalled\"} 1"), "resting is not a run: \(text)")
        #expect(fwRuns.withLock { $0 } == 0, "its dependent rests with it")

        clock.advance(by: TimeSpan(milliseconds: 60_000))   // 10 minutes after the failure
        await loop.pass()
        s = await statusJSON()
        #expect(osRuns.withLock { $0 } == 2 && fwRuns.withLock { $0 } == 1)
        #expect(s["converged"] == .bool(true) && s["verdict"]?.string == "Converged" && s["needsHuman"] == .array([]), "\(s)")
        #expect(metricsText().contains("nodeagent_reconciler_stalled{reconciler=\"os\"} 0"))

        // POST /sync clears a rest at once.
        exists.withLock { $0 = false }
        clock.advance(by: TimeSpan(milliseconds: 1000))
        await loop.pass()
        #expect(osRuns.withLock { $0 } == 3)
        await loop.pass()
        #expect(osRuns.withLock { $0 } == 3, "resting")
        loop.sync()
        await loop.pass()
        #expect(osRuns.withLock { $0 } == 4, "POST /sync retries a stalled reconciler at once")
    }
}

/// The daemon's loop over a desired-state file, with its own status and metrics, for tests
/// that drive passes by hand (a minute's poll, five minutes' drift: no timer runs here).
struct TestLoop {
    let loop: ReconcileLoop
    let status: AgentStatus
    let metrics: AgentMetrics

    init(state: String, engine: Engine, host: Reconcilers.Host, recoverFromOffsite: Bool = false) {
        status = AgentStatus(clock: host.clock)
        metrics = AgentMetrics()
        loop = ReconcileLoop(source: .file(state), engine: engine, host: host, status: status, metrics: metrics,
                             poll: TimeSpan(milliseconds: 60_000), drift: TimeSpan(milliseconds: 300_000), logger: Logger(label: "test"),
                             recoverFromOffsite: recoverFromOffsite)
    }

    /// With the heartbeat's pinger running beside it (cancelled with the returned task).
    func beating() -> (Heartbeat, Task<Void, Never>) {
        let heartbeat = Heartbeat(loop: loop, host: loop.host, status: status, metrics: metrics, logger: Logger(label: "test"))
        loop.onPassFinished { heartbeat.passFinished() }
        return (heartbeat, Task { await heartbeat.beat() })
    }
}
