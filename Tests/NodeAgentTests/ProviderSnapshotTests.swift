import Foundation
import Testing
import TestSupport
import Reconcilers
import YAML
import Synchronization
import Logging
@testable import NodeAgent

/// OVHcloud VPS snapshots against a stand-in of the OVHcloud API that checks every signature
/// and the timestamp window, and refuses wrong credentials as OVHcloud does.
@Suite("Provider snapshots: OVHcloud")
struct ProviderSnapshotTests {
    static let (ak, asecret, ck) = ("AKtest7f3a", "AS-secret-9c1e55", "CK-consumer-4b2d88")
    static let service = "vps-1a2b3c4d.vps.ovh.net"

    struct StandIn {
        let port: Int
        let pid: Int32
        let log: String

        static func start(in dir: String, polls: Int) async throws -> StandIn {
            let port = TLSTestPeer.freePort()
            let log = dir + "/ovh.log"
            let pid = try DetachedProcess.spawn(["/usr/bin/python3", Fixtures.repository + "/Tests/Fixtures/ovh/standin.py", String(port),
                                                 ProviderSnapshotTests.ak, ProviderSnapshotTests.asecret, ProviderSnapshotTests.ck,
                                                 ProviderSnapshotTests.service, log, String(polls)], output: dir + "/ovh.out")
            for _ in 0..<400 { if TLSTestPeer.canConnect(port) { break }; try await Task.sleep(for: .milliseconds(50)) }
            return StandIn(port: port, pid: pid, log: log)
        }

        func state() async throws -> JSONValue {
            let r = try await SystemCommandRunner().check(Command("curl", ["-s", "http://127.0.0.1:\(port)/_state"]))
            return try #require(JSONValue.parse(Array(r.stdout.utf8)))
        }

        var calls: [String] { ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init) }
        func stop() { DetachedProcess.stop(pid) }
    }

    static func conf(ck: String = ck) -> String {
        "[default]\nendpoint=ovh-eu\n\n[ovh-eu]\napplication_key=\(ak)\napplication_secret=\(asecret)\nconsumer_key=\(ck)\n"
    }

    /// python-ovh's own test vector (tests/test_client.py, test_call_signature).
    @Test func theSignatureIsOVHcloudsOwn() {
        let (s, c, url) = ("9ufkBmLaTQ9nz5yMUlg79taH0GNnzDjk", "5mBuy6SUQcRw2ZUxg0cG68BoDKpED4KY", "https://eu.api.ovh.com/1.0/auth")
        #expect(OVHClient.signature(secret: s, consumer: c, method: "GET", url: url, body: "", timestamp: 1457018875)
                == "$1$e9556054b6309771395efa467c22e627407461ad")
        #expect(OVHClient.signature(secret: s, consumer: c, method: "POST", url: url, body: #"{"a":"b","c":"d"}"#, timestamp: 1457018875)
                == "$1$ec2fb5c7a81f64723c77d2e5b609ae6f58a84fc1")
    }

    /// A VPS keeps one snapshot: the second replaces the first (delete, wait, create, wait),
    /// each task polled on the clock; the keys go only to curl's stdin.
    @Test func aSnapshotReplacesThePreviousOneTaskByTask() async throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let api = try await StandIn.start(in: dir, polls: 2)
        defer { api.stop() }
        // An hour behind: the signature's timestamp must come from the server's /auth/time.
        let clock = ManualWallClock(now: SystemWallClock().now().adding(TimeSpan(milliseconds: -3_600_000)))
        let runner = SecurityTests.RecordingRunner()
        let provider = OVHSnapshots(client: OVHClient(endpoint: "http://127.0.0.1:\(api.port)/1.0",
                                                      credentials: try OVHCredentials(conf: Self.conf(), file: "ovh.conf"),
                                                      commands: runner, clock: clock),
                                    serviceName: Self.service, clock: clock)
        #expect(try await provider.current() == nil)
        for round in 1...2 {
            let task = Task { try await provider.replace(description: "round \(round)") { _ in } }
            // Each task is polled, then waits 5 s on the clock: move it on.
            let mover = Task {
                while !Task.isCancelled {
                    if clock.sleeperCount > 0 { clock.advance(by: TimeSpan(milliseconds: 5_000)) }
                    try await Task.sleep(for: .milliseconds(5))
                }
            }
            let made = try await task.value
            mover.cancel()
            #expect(made.id == "snap-\(round)" && made.description == "round \(round)")
        }
        let state = try await api.state()
        #expect(state["created"] == .int(2) && state["deleted"] == .int(1) && state["snapshot"]?["id"]?.string == "snap-2", "\(state)")
        let calls = api.calls.filter { !$0.contains("/_state") && !$0.contains("/tasks/") && !$0.contains("/auth/time") }
        #expect(calls.map { $0.split(separator: " ").prefix(2).joined(separator: " ") } == [
            "GET /1.0/vps/\(Self.service)/snapshot",
            "GET /1.0/vps/\(Self.service)/snapshot", "POST /1.0/vps/\(Self.service)/createSnapshot", "GET /1.0/vps/\(Self.service)/snapshot",
            "GET /1.0/vps/\(Self.service)/snapshot", "DELETE /1.0/vps/\(Self.service)/snapshot",
            "POST /1.0/vps/\(Self.service)/createSnapshot", "GET /1.0/vps/\(Self.service)/snapshot",
        ], "\(calls)")
        #expect(api.calls.filter { $0.contains("/tasks/") }.count == 6, "two polls a task")
        let argv = runner.seen.withLock { $0 }
        #expect(!argv.isEmpty && argv.allSatisfy { c in ![Self.asecret, Self.ck, Self.ak].contains { c.description.contains($0) } })
        #expect(!argv.contains { String(decoding: $0.input ?? [], as: UTF8.self).contains(Self.asecret) }, "the secret signs; it is never sent")
    }

    /// `nodeagent backup snapshot`, the real binary: one fresh snapshot; OVHcloud's refusals
    /// (a wrong consumer key, a quota) reported with their message; no key in any output.
    @Test func theCommandTakesOneSnapshotAndReportsRefusals() async throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let api = try await StandIn.start(in: dir, polls: 1)
        defer { api.stop() }
        let fs = RootedFileSystem(root: dir + "/root")
        try fs.write("/etc/nodeagent/secrets/ovh.conf", Array(Self.conf().utf8), mode: 0o600)
        let state = dir + "/platform.yaml"
        try """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: vps-1}
            spec:
              backups:
                providerSnapshot:
                  provider: ovh
                  endpoint: http://127.0.0.1:\(api.port)/1.0
                  serviceName: \(Self.service)
                  credentialsFile: /etc/nodeagent/secrets/ovh.conf
                  schedule: "0 2 * * 0"
            """.write(toFile: state, atomically: true, encoding: .utf8)
        #expect(try await Binary.run(["validate", state]).exitCode == 0)
        var outputs: [String] = []
        for _ in 1...2 {
            let r = try await Binary.run(["backup", "snapshot", "--state", state, "--root", dir + "/root"])
            outputs.append(r.stdout + r.stderr)
            #expect(r.exitCode == 0, "\(r.stdout)\(r.stderr)")
        }
        #expect(outputs[1].contains("snapshot snap-2 of \(Self.service): taken"), "\(outputs[1])")
        let snapshots = try await api.state()
        #expect(snapshots["created"] == .int(2) && snapshots["deleted"] == .int(1), "exactly one, the fresh one: \(snapshots)")
        #expect(ProviderSnapshotRecord.load(fs)?.id == "snap-2")
        // The daemon's /status and /metrics show its age after a pass.
        let host = Host(root: dir + "/root")
        let rig = TestLoop(state: state, engine: try Engine(BuiltInReconcilers.all(on: host)), host: host)
        let (loop, status, metrics) = (rig.loop, rig.status, rig.metrics)
        await loop.pass()
        let shown = await status.json
        #expect(shown["providerSnapshot"]?["id"]?.string == "snap-2" && shown["providerSnapshot"]?["ok"] == .bool(true), "\(shown.jsonText)")
        #expect(shown["providerSnapshot"]?["ageSeconds"] != nil && shown["providerSnapshot"]?["ageSeconds"] != .null)
        let exposition = String(decoding: metrics.exposition(), as: UTF8.self)
        #expect(exposition.contains("nodeagent_provider_snapshot_last_result_ok 1"), "\(exposition)")
        outputs += [shown.jsonText, exposition]

        _ = try await SystemCommandRunner().run(Command("curl", ["-s", "http://127.0.0.1:\(api.port)/_refuse?quota"]))
        let quota = try await Binary.run(["backup", "snapshot", "--state", state, "--root", dir + "/root"])
        outputs.append(quota.stdout + quota.stderr)
        #expect(quota.exitCode == 1 && quota.stderr.contains("Forbidden") && quota.stderr.contains("maximum number of snapshots"), "\(quota.stderr)")
        // The old snapshot was deleted before the create was refused: the VPS has none, and
        // the record says so (no last success to count the age from).
        #expect(try await api.state()["snapshot"] == .null)
        #expect(ProviderSnapshotRecord.load(fs).map { !$0.ok && $0.lastSuccess == nil } == true)

        try fs.write("/etc/nodeagent/secrets/ovh.conf", Array(Self.conf(ck: "CK-revoked-0000").utf8), mode: 0o600)
        let refused = try await Binary.run(["backup", "snapshot", "--state", state, "--root", dir + "/root"])
        outputs.append(refused.stdout + refused.stderr)
        #expect(refused.exitCode == 1 && refused.stderr.contains("CredentialsRefused") && refused.stderr.contains("This credential does not exist"),
                "\(refused.stderr)")
        for text in outputs {
            for secret in [Self.asecret, Self.ck, "CK-revoked-0000"] { #expect(!text.contains(secret), "\(secret) shown: \(text)") }
        }
    }
}
