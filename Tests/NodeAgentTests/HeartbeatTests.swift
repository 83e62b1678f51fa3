import Foundation
import Logging
import Testing
import TestSupport
import Reconcilers
import YAML
import Synchronization
@testable import NodeAgent

/// The dead-man's switch against a real HTTP receiver and the real `curl`: on a manual clock
/// in-process, and through the real daemon stopped with SIGSTOP.
@Suite("Heartbeat: a dead-man's switch")
struct HeartbeatTests {
    /// An HTTP receiver on loopback that logs `METHOD PATH BODY` a line each (200 OK).
    struct Receiver {
        let port: Int
        let pid: Int32
        let log: String

        /// - Parameter lab: with a lab, the receiver runs in its vps namespace (where the daemon
        ///   under test runs), on that namespace's loopback.
        static func start(in dir: String, lab: NetworkLab? = nil) async throws -> Receiver {
            let port = TLSTestPeer.freePort()
            let log = dir + "/pings.log"
            let prefix = lab.map { ["/usr/sbin/ip", "netns", "exec", $0.vps] } ?? []
            let pid = try DetachedProcess.spawn(prefix + ["/usr/bin/python3", "-c", """
                import http.server, sys
                class H(http.server.BaseHTTPRequestHandler):
                    def handle_one(s):
                        n = int(s.headers.get("Content-Length") or 0)
                        body = s.rfile.read(n).decode() if n else ""
                        with open(sys.argv[1], "a") as f: f.write(s.command + " " + s.path + " " + body.replace("\\n", "|") + "\\n")
                        s.send_response(200); s.send_header("Content-Length", "2"); s.end_headers(); s.wfile.write(b"OK")
                    do_GET = handle_one
                    do_POST = handle_one
                    def log_message(s, *a): pass
                http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), H).serve_forever()
                """, log, String(port)])
            for _ in 0..<400 {
                if let lab {
                    // A bare connection, no request: nothing is logged as a ping.
                    let r = try await lab.run(lab.vps, ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/\(port)"])
                    if r.exitCode == 0 { break }
                } else if TLSTestPeer.canConnect(port) {
                    break
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            return Receiver(port: port, pid: pid, log: log)
        }

        var pings: [String] {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }

        /// Waits (up to 20 s) for at least `count` pings.
        func await(_ count: Int) async throws -> [String] {
            for _ in 0..<400 { if pings.count >= count { break }; try await Task.sleep(for: .milliseconds(50)) }
            return pings
        }

        /// Waits (up to 20 s) until the pings satisfy `done`.
        func await(until done: ([String]) -> Bool) async throws -> [String] {
            for _ in 0..<400 { if done(pings) { break }; try await Task.sleep(for: .milliseconds(50)) }
            return pings
        }

        func stop() { DetachedProcess.stop(pid) }
    }

    /// A root whose desired state pings `url` every 5 minutes (and declares `os`, which the
    /// tests' stand-in reconcilers play): its file system and state file.
    static func node(_ root: String, url: String) throws -> (RootedFileSystem, String) {
        let fs = RootedFileSystem(root: root)
        try fs.write("/etc/nodeagent/secrets/heartbeat-url", Array("\(url)\n".utf8), mode: 0o600)
        let state = root + "/platform.yaml"
        try """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: vps-1}
            spec:
              os: {}
              heartbeat: {urlFile: /etc/nodeagent/secrets/heartbeat-url, interval: 5m}

            """.write(toFile: state, atomically: true, encoding: .utf8)
        return (fs, state)
    }

    @Test func pingsOnTheClockSignalsFailureAndRetriesWithoutShowingTheURL() async throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let receiver = try await Receiver.start(in: root)
        defer { receiver.stop() }
        let token = "hc-\(UInt64.random(in: 1...UInt64.max))"
        let url = "http://127.0.0.1:\(receiver.port)/ping/\(token)"
        let (fs, state) = try Self.node(root, url: url)
        let clock = ManualWallClock(now: Timestamp(millisecondsSinceEpoch: 1_000_000_000))
        let commands = SecurityTests.RecordingRunner()
        let host = Host(files: fs, commands: commands, services: SystemdServiceManager(commands: commands, root: root), clock: clock)
        let runs = PassResultTests.Cell(0), exists = PassResultTests.Cell(false)
        let engine = try Engine([AnyReconciler(PassResultTests.NeedsUser(runs: runs, userExists: exists))]
                                + BuiltInReconcilers.all(on: host).filter { $0.name == .heartbeat }, clock: clock)
        let rig = TestLoop(state: state, engine: engine, host: host)
        let (loop, status, metrics) = (rig.loop, rig.status, rig.metrics)
        let (_, beating) = rig.beating()
        defer { beating.cancel() }

        // A reconciler needs a person: the failure signal, with the reason as the body.
        // (A plain ping may come first: the pinger starts with the pass, before its outcome.)
        await loop.pass()
        let fail = "POST /ping/\(token)/fail nodeagent on vps-1: os: Stalled NoSuchUser"
        var pings = try await receiver.await { $0.last?.hasPrefix(fail) == true }
        #expect(pings.last?.hasPrefix(fail) == true && pings.count <= 2, "\(pings)")

        // Fixed: the next pass turns the signal back to a plain ping at once.
        exists.withLock { $0 = true }
        loop.sync()
        await loop.pass()
        let before = pings.count
        pings = try await receiver.await { $0.count > before }
        #expect(pings.count == before + 1 && pings.last == "GET /ping/\(token) ", "\(pings)")

        // Then one every interval, on the clock: nothing until 5 minutes have passed.
        for _ in 0..<400 { if clock.sleeperCount > 0 { break }; try await Task.sleep(for: .milliseconds(10)) }
        clock.advance(by: TimeSpan(milliseconds: 299_000))
        await loop.pass()   // a pass that changes nothing does not ping either
        for _ in 0..<400 { if clock.sleeperCount > 0 { break }; try await Task.sleep(for: .milliseconds(10)) }
        #expect(receiver.pings.count == before + 1)
        clock.advance(by: TimeSpan(milliseconds: 1_000))
        pings = try await receiver.await { $0.count > before + 1 }
        #expect(pings.count == before + 2 && pings.last == "GET /ping/\(token) ", "\(pings)")

        // The watcher is away: three tries (2 s and 4 s apart on the clock), counted, shown
        // without the URL.
        receiver.stop()
        for _ in 0..<400 { if clock.sleeperCount > 0 { break }; try await Task.sleep(for: .milliseconds(10)) }
        clock.advance(by: TimeSpan(milliseconds: 300_000))
        for (failed, step) in [(1, 2_000), (2, 4_000)] {
            // The failed try is counted and the retry sleeps on the clock: move it on.
            for _ in 0..<1000 where !(metricsText(metrics).contains("nodeagent_heartbeat_pings_total{result=\"failed\"} \(failed)")
                                      && clock.sleeperCount > 0) {
                try await Task.sleep(for: .milliseconds(10))
            }
            clock.advance(by: TimeSpan(milliseconds: Int64(step)))
        }
        var failedText = ""
        for _ in 0..<1000 where !failedText.contains("nodeagent_heartbeat_pings_total{result=\"failed\"} 3") {
            try await Task.sleep(for: .milliseconds(10))
            failedText = metricsText(metrics)
        }
        #expect(failedText.contains("nodeagent_heartbeat_pings_total{result=\"failed\"} 3"), "\(failedText)")
        #expect(failedText.contains("nodeagent_heartbeat_pings_total{result=\"ok\"} \(before + 2)"))
        // A failed round is tried again after 30 s, not a whole interval later; not before.
        #expect(!metricsText(metrics).contains("result=\"failed\"} 4"))
        for _ in 0..<400 { if clock.sleeperCount > 0 { break }; try await Task.sleep(for: .milliseconds(10)) }
        clock.advance(by: TimeSpan(milliseconds: 30_000))
        for _ in 0..<1000 { if metricsText(metrics).contains("result=\"failed\"} 4") { break }; try await Task.sleep(for: .milliseconds(10)) }
        #expect(metricsText(metrics).contains("nodeagent_heartbeat_pings_total{result=\"failed\"} 4"))
        let s = await status.json
        #expect(s["heartbeat"]?["ok"] == .bool(false) && s["heartbeat"]?["failedPings"] == .int(1), "\(s.jsonText)")
        // The URL's secret part never shows: not in /status, /metrics, nor any command line.
        #expect(!s.jsonText.contains(token) && !failedText.contains(token))
        let argv = commands.seen.withLock { $0 }.filter { $0.executable == "curl" }
        #expect(argv.count == before + 6 && argv.allSatisfy { !$0.arguments.joined(separator: " ").contains(token) }, "\(argv.count) curls, \(before) pings before: \(pings)")
        #expect(argv.allSatisfy { String(decoding: $0.input ?? [], as: UTF8.self).contains(token) }, "the URL goes on stdin")
    }

    /// The URL rules: https, or http to the node itself (an authority ending at ?, # or / —
    /// `http://evil?@127.0.0.1/` is evil's), no query (the failure signal appends /fail), and
    /// only the scheme and host shown.
    @Test func onlyAnHTTPSOrLoopbackURLWithoutAQuery() throws {
        let file = try AbsolutePath(parsing: "/etc/nodeagent/secrets/heartbeat-url")
        for bad in ["http://evil.example?@127.0.0.1/x", "http://evil.example#@127.0.0.1/x", "http://hc-ping.com/uuid",
                    "https://hc-ping.com/uuid?ping=", "ftp://127.0.0.1/x", "https://hc ping.com/u", "https://h/\"x"] {
            #expect(throws: ReconcileError.self, "\(bad)") { try HeartbeatURL(bad, file: file) }
        }
        #expect(try HeartbeatURL("http://127.0.0.1:9/ping/u\n", file: file).value == "http://127.0.0.1:9/ping/u")
        #expect(try HeartbeatURL("https://user:pw@hc-ping.com/secret-uuid", file: file).shown == "https://hc-ping.com/…")
        #expect(!RepoURL.isLoopbackURL("http://evil.example?@127.0.0.1/x"))
        // A body cannot add a curl option: quotes and newlines stay inside the value.
        var config = CurlConfig(url: "https://hc-ping.com/u")
        config.set("data-raw", "x\"\nurl = \"http://evil.example/\"\\")
        let text = String(decoding: config.command([], timeout: .seconds(1)).input ?? [], as: UTF8.self)
        #expect(text == #"url = "https://hc-ping.com/u""# + "\n" + #"data-raw = "x\"\nurl = \"http://evil.example/\"\\""# + "\n", "\(text)")
    }

    /// Hangs in observe until released: a stuck pass.
    struct Hang: Reconciler {
        static let name = ReconcilerName.os
        static let dependencies: [ReconcilerName] = []
        let gate: Nudge
        var owns: [OwnedResource] { [] }
        func desired(from platform: Platform) -> Bool? { platform.spec.os == nil ? nil : true }
        func observe(_ desired: Bool) async throws -> Bool { _ = await gate.wait(); return true }
        func plan(_ desired: Bool, _ observed: Bool) throws -> [Change] { [] }
        func apply(_ changes: [Change], desired: Bool) async throws {}
        func verify(_ desired: Bool) async throws -> Condition { .ready() }
    }

    /// nodeagent hangs: a pass that does not end. The pinger runs on its own, so it says so:
    /// the failure signal once the pass has run for 30 minutes, plain pings again after.
    @Test func aHungPassIsReportedToTheWatcher() async throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let receiver = try await Receiver.start(in: root)
        defer { receiver.stop() }
        let (fs, state) = try Self.node(root, url: "http://127.0.0.1:\(receiver.port)/ping/hung")
        let clock = ManualWallClock(now: Timestamp(millisecondsSinceEpoch: 1_000_000_000))
        let host = Host(files: fs, commands: SystemCommandRunner(), services: SystemdServiceManager(root: root), clock: clock)
        let gate = Nudge()
        gate.signal()   // the first pass goes through
        let engine = try Engine([AnyReconciler(Hang(gate: gate))] + BuiltInReconcilers.all(on: host).filter { $0.name == .heartbeat }, clock: clock)
        let rig = TestLoop(state: state, engine: engine, host: host)
        let (loop, status, metrics) = (rig.loop, rig.status, rig.metrics)
        let (_, beating) = rig.beating()
        defer { beating.cancel() }
        await loop.pass()
        #expect(try await receiver.await(1) == ["GET /ping/hung "])
        let stuck = Task { await loop.pass() }   // waits in observe
        for _ in 0..<400 { if loop.passRunningFor() != nil { break }; try await Task.sleep(for: .milliseconds(10)) }
        for minutes in [5, 10, 15, 20, 25] {
            for _ in 0..<400 { if clock.sleeperCount > 0 { break }; try await Task.sleep(for: .milliseconds(10)) }
            clock.advance(by: TimeSpan(milliseconds: 300_000))
            let pings = try await receiver.await(1 + minutes / 5)
            #expect(pings.last == "GET /ping/hung ", "at \(minutes) min: \(pings)")
        }
        for _ in 0..<400 { if clock.sleeperCount > 0 { break }; try await Task.sleep(for: .milliseconds(10)) }
        clock.advance(by: TimeSpan(milliseconds: 300_000))
        let hung = try await receiver.await(7)
        #expect(hung.last?.hasPrefix("POST /ping/hung/fail nodeagent on vps-1: a pass has been running for 30m") == true, "\(hung)")
        gate.signal()
        await stuck.value
        let after = try await receiver.await(8)
        #expect(after.last == "GET /ping/hung ", "once the pass ends: \(after)")
    }

    func metricsText(_ metrics: AgentMetrics) -> String { String(decoding: metrics.exposition(), as: UTF8.self) }

    /// The real daemon in its own network namespace, interval 1 s, the receiver in the same
    /// namespace: it pings while it runs; stopped (SIGSTOP), it does not; continued, it does again.
    @Test func aStoppedDaemonStopsPinging() async throws {
        let lab = try await NetworkLab()
        defer { Task { await lab.destroy() } }
        let root = lab.root
        let receiver = try await Receiver.start(in: root, lab: lab)
        defer { receiver.stop() }
        let fs = RootedFileSystem(root: root)
        try fs.write("/etc/nodeagent/secrets/heartbeat-url", Array("http://127.0.0.1:\(receiver.port)/ping/daemon\n".utf8), mode: 0o600)
        let state = root + "/platform.yaml"
        try """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: vps-1}
            spec:
              heartbeat: {urlFile: /etc/nodeagent/secrets/heartbeat-url, interval: 1s}

            """.write(toFile: state, atomically: true, encoding: .utf8)
        let port = TLSTestPeer.freePort()
        let pid = try DetachedProcess.spawn(["/bin/sh", "-c",
            "exec ip netns exec \(lab.vps) \"$0\" run --state \"$1\" --root \"$2\" --listen 127.0.0.1:\(port) 2>\"$2/daemon.log\"",
            Binary.path, state, root])
        defer { DetachedProcess.stop(pid) }
        let before = try await receiver.await(3)
        #expect(before.count >= 3, "\(before) \((try? String(contentsOfFile: root + "/daemon.log", encoding: .utf8)) ?? "")")
        #expect(before.allSatisfy { $0 == "GET /ping/daemon " })
        kill(pid, SIGSTOP)
        let stopped = receiver.pings.count
        // Real time on purpose: a process that does not run keeps no clock. Three intervals.
        try await Task.sleep(for: .seconds(3))
        #expect(receiver.pings.count <= stopped + 1, "pings went on while the daemon was stopped")
        kill(pid, SIGCONT)
        let quiet = receiver.pings.count
        let after = try await receiver.await(quiet + 1)
        #expect(after.count > quiet, "no ping after SIGCONT")
        DetachedProcess.stop(pid)
        _ = await DetachedProcess.waitForExit(pid, timeout: .seconds(10))
        receiver.stop()
        await lab.destroy()
    }
}
