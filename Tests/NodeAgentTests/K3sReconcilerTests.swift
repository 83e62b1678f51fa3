import Foundation
import Synchronization
import Testing
import TestSupport
import KubeTestServer
import KubeClient
import Reconcilers
import YAML

/// K3s install, upgrade and rollback in a temp root: a local HTTP server publishes stand-in
/// "k3s binaries" (a script running Tests/Fixtures/k3s/standin.py) by version, the
/// `ProcessSupervisor` runs them as the k3s.service, and the test API server plays the
/// cluster they "start" (a good stand-in registers the node Ready at its version).
final class K3sLab: @unchecked Sendable {
    let api: KubeTestServer
    let releases: HTTPServer
    let root: String
    let work: String
    /// What the release server serves, and how many requests it had.
    final class Store: Sendable {
        let routes = Mutex<[String: HTTPServer.Response]>([:])
        let requests = Mutex(0)
    }
    let store = Store()

    init() async throws {
        api = try await KubeTestServer()
        root = Fixtures.temporaryDirectory()
        work = Fixtures.temporaryDirectory()
        try api.writeKubeconfig(to: work + "/kubeconfig.yaml")
        let store = self.store
        releases = try HTTPServer { request in
            store.requests.withLock { $0 += 1 }
            return store.routes.withLock { $0[request.path] } ?? .full(status: 404, headers: [], body: Array("Not Found".utf8))
        }
    }

    func stop() async {
        try? await ProcessSupervisor(root: root).stop("k3s.service")
        releases.stop()
        api.stop()
        try? FileManager.default.removeItem(atPath: root)
        try? FileManager.default.removeItem(atPath: work)
    }

    /// A stand-in binary: `--version` answers like K3s; `server` runs standin.py.
    func standIn(_ version: String, good: Bool) -> [UInt8] {
        let script = Fixtures.repository + "/Tests/Fixtures/k3s/standin.py"
        return Array("""
            #!/bin/sh
            # stand-in k3s \(version) for nodeagent's tests
            if [ "$1" = "--version" ]; then echo "k3s version \(version) (stand-in)"; exit 0; fi
            exec /usr/bin/python3 \(script) \(version) \(good ? "good" : "bad") \(root) \(work)/kubeconfig.yaml \(api.tokenURL) \(api.token) vps-1

            """.utf8)
    }

    /// Serves the bytes as `VERSION/k3s`. - Returns: their sha256.
    @discardableResult
    func publish(_ version: String, _ bytes: [UInt8], cutAfter: Int? = nil) -> String {
        let path = "/releases/\(version.replacingOccurrences(of: "+", with: "%2B"))/k3s"
        store.routes.withLock { $0[path] = cutAfter.map { .truncated(status: 200, body: bytes, sent: $0) } ?? .full(status: 200, headers: [], body: bytes) }
        return Digest.sha256Hex(bytes)
    }

    func state(_ version: String, _ sha256: String, readyTimeout: String = "10s", extra: String = "") throws -> Platform {
        let text = """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: vps-1}
            spec:
              k3s:
                version: \(version)
                sha256: "\(sha256)"
                tlsSANs: [10.8.0.1]
                disable: [traefik]
                downloadURL: http://127.0.0.1:\(releases.port)/releases
                readyTimeout: \(readyTimeout)
            \(extra)
            """
        return try DesiredStateLoader.load(Array(text.utf8), file: "platform.yaml")
    }

    var host: Reconcilers.Host {
        Reconcilers.Host(files: RootedFileSystem(root: root), commands: SystemCommandRunner(), services: ProcessSupervisor(root: root), clock: SystemWallClock())
    }

    func engine() throws -> Engine {
        let host = self.host
        return try Engine([AnyReconciler(K3sReconciler(host: host, cluster: ClusterAccess(files: host.files, retry: RetryPolicy(attempts: 1)),
                                                       options: .init(pollInterval: .milliseconds(200))))])
    }

    func apply(_ platform: Platform) async throws -> Engine.Entry {
        try #require(await engine().apply(platform).first)
    }

    func plan(_ platform: Platform) async throws -> Engine.Entry {
        try #require(await engine().plan(platform).first)
    }

    var binarySHA256: String? {
        (try? Data(contentsOf: URL(fileURLWithPath: root + "/usr/local/bin/k3s"))).map { Digest.sha256Hex(Array($0)) }
    }

    var pid: String? {
        (try? String(contentsOfFile: root + "/run/nodeagent-supervisor/k3s.service.pid", encoding: .utf8))
    }

    var log: String { (try? String(contentsOfFile: root + "/run/nodeagent-supervisor/k3s.service.log", encoding: .utf8)) ?? "" }

    var nodeVersion: String? {
        api.object("nodes", name: "vps-1")?["status"]?["nodeInfo"]?["kubeletVersion"]?.string
    }
}

@Suite("k3s reconciler: install, checksum, upgrade, rollback (stand-in binaries, a real process supervisor)", .serialized)
struct K3sReconcilerTests {
    @Test func installsThenRefusesBadDownloadsWithoutTouchingTheRunningK3s() async throws {
        let lab = try await K3sLab()
        let v1 = "v1.31.4+k3s1"
        let good = lab.standIn(v1, good: true)
        let sha1 = lab.publish(v1, good)

        let plan = try await lab.plan(try lab.state(v1, sha1))
        #expect(plan.changes.map(\.description).first == "+ k3s binary /usr/local/bin/k3s \(v1) from http://127.0.0.1:\(lab.releases.port)/releases/v1.31.4%2Bk3s1/k3s")
        let installed = try await lab.apply(try lab.state(v1, sha1))
        #expect(installed.condition == .ready("K3s \(v1), node vps-1 Ready"), "\(installed) \(lab.log)")
        #expect(lab.binarySHA256 == sha1)
        #expect(try FileManager.default.attributesOfItem(atPath: lab.root + "/usr/local/bin/k3s")[.posixPermissions] as? Int == 0o755)
        let config = try String(contentsOfFile: lab.root + "/etc/rancher/k3s/config.yaml", encoding: .utf8)
        #expect(config.contains("write-kubeconfig-mode: \"0600\"\nnode-name: vps-1\ntls-san:\n- \"10.8.0.1\"\n"), "\(config)")
        #expect(config.contains("disable:\n- traefik\n"))
        #expect(lab.nodeVersion == v1)
        // systemd takes the unit as written (the program path pointed at the stand-in).
        let unit = try String(contentsOfFile: lab.root + "/etc/systemd/system/k3s.service", encoding: .utf8)
        try unit.replacingOccurrences(of: "/usr/local/bin/k3s", with: lab.root + "/usr/local/bin/k3s")
            .write(toFile: lab.work + "/k3s.service", atomically: true, encoding: .utf8)
        let verify = try await SystemCommandRunner().run(Command("systemd-analyze", ["verify", lab.work + "/k3s.service"]))
        #expect(verify.exitCode == 0 && verify.stdout.isEmpty && verify.stderr.isEmpty, "\(verify.stdout)\(verify.stderr)")
        // Converged: nothing to do, nothing restarted.
        let pid = lab.pid
        let again = try await lab.apply(try lab.state(v1, sha1))
        #expect(again.changes.isEmpty && again.condition?.status == .ready)
        #expect(lab.pid == pid)

        // A checksum that does not match: refused before anything changes.
        let v2 = "v1.31.5+k3s1"
        lab.publish(v2, lab.standIn(v2, good: true))
        let mismatch = try await lab.apply(try lab.state(v2, String(repeating: "ab", count: 32)))
        #expect(mismatch.condition?.reason == "ChecksumMismatch")
        #expect(mismatch.condition?.message.contains("spec.k3s.sha256 is abab") == true)
        #expect(mismatch.condition?.message.contains("the running K3s is untouched") == true)
        // A version that does not exist, and a download cut off mid-way.
        let missing = try await lab.apply(try lab.state("v1.31.9+k3s1", String(repeating: "cd", count: 32)))
        #expect(missing.condition?.reason == "DownloadFailed")
        #expect(missing.condition?.message.contains("answered 404") == true, "\(String(describing: missing.condition))")
        let v3 = "v1.31.6+k3s1"
        let big = lab.standIn(v3, good: true) + [UInt8](repeating: 0x23, count: 300_000)
        let sha3 = lab.publish(v3, big, cutAfter: 100_000)
        let cut = try await lab.apply(try lab.state(v3, sha3))
        #expect(cut.condition?.reason == "DownloadFailed")
        #expect(cut.condition?.message.contains("after 100000 bytes") == true, "\(String(describing: cut.condition))")
        // Through all of it, the same K3s kept running and no partial download was left.
        #expect(lab.binarySHA256 == sha1)
        #expect(lab.pid == pid)
        #expect(!FileManager.default.fileExists(atPath: lab.root + "/usr/local/bin/.k3s.nodeagent-download"))
        #expect(try await lab.plan(try lab.state(v1, sha1)).changes.isEmpty)
        await lab.stop()
    }

    /// `beforeK3sUpgrade`: the upgrade waits for a finished provider snapshot, and is not
    /// attempted when the snapshot fails (the OVHcloud stand-in refusing the credentials).
    @Test func anUpgradeWaitsForTheProviderSnapshotAndNeverGoesWithoutIt() async throws {
        let lab = try await K3sLab()
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ovh = try await ProviderSnapshotTests.StandIn.start(in: dir, polls: 1)
        defer { ovh.stop() }
        let fs = RootedFileSystem(root: lab.root)
        try fs.write("/etc/nodeagent/secrets/ovh.conf", Array(ProviderSnapshotTests.conf(ck: "CK-wrong-1111").utf8), mode: 0o600)
        let snapshot = """
              backups:
                providerSnapshot: {provider: ovh, endpoint: "http://127.0.0.1:\(ovh.port)/1.0", serviceName: \(ProviderSnapshotTests.service),
                                   credentialsFile: /etc/nodeagent/secrets/ovh.conf, beforeK3sUpgrade: true}
            """
        let v1 = "v1.31.4+k3s1", v2 = "v1.31.5+k3s1"
        let sha1 = lab.publish(v1, lab.standIn(v1, good: true))
        // A first install is no upgrade: no snapshot is asked for.
        #expect(try await lab.apply(try lab.state(v1, sha1, extra: snapshot)).condition?.status == .ready, "\(lab.log)")
        #expect(try await ovh.state()["created"] == .int(0))
        let sha2 = lab.publish(v2, lab.standIn(v2, good: true))
        let refused = try await lab.apply(try lab.state(v2, sha2, extra: snapshot))
        #expect(refused.condition?.reason == "ProviderSnapshotFailed" && refused.condition?.message.contains("This credential does not exist") == true,
                "\(String(describing: refused.condition))")
        #expect(lab.binarySHA256 == sha1, "no upgrade without its snapshot")
        #expect(!FileManager.default.fileExists(atPath: lab.root + "/usr/local/bin/.k3s.nodeagent-download"), "the download is not left behind")
        try fs.write("/etc/nodeagent/secrets/ovh.conf", Array(ProviderSnapshotTests.conf().utf8), mode: 0o600)
        let upgraded = try await lab.apply(try lab.state(v2, sha2, extra: snapshot))
        #expect(upgraded.condition?.status == .ready, "\(String(describing: upgraded.condition)) \(lab.log)")
        #expect(lab.binarySHA256 == sha2)
        #expect(try await ovh.state()["created"] == .int(1) && ProviderSnapshotRecord.load(fs)?.ok == true)
        // The snapshot was done (its task finished) before the new binary was put in place:
        // the binary's inode changed (chmod, rename) after the snapshot's success was recorded.
        let done = try #require(ProviderSnapshotRecord.load(fs)?.lastSuccess)
        var st = stat()
        #expect(stat(lab.root + "/usr/local/bin/k3s", &st) == 0)
        let changed = Int64(st.st_ctim.tv_sec) * 1000 + Int64(st.st_ctim.tv_nsec) / 1_000_000
        #expect(changed >= done.millisecondsSinceEpoch, "binary changed at \(changed), snapshot done at \(done.millisecondsSinceEpoch)")
        await lab.stop()
    }

    @Test func anUpgradeThatNeverGetsReadyIsRolledBackAndNotRetried() async throws {
        let lab = try await K3sLab()
        let v1 = "v1.31.4+k3s1"
        let sha1 = lab.publish(v1, lab.standIn(v1, good: true))
        #expect(try await lab.apply(try lab.state(v1, sha1)).condition?.status == .ready, "\(lab.log)")

        let bad = "v1.32.0+k3s1"
        let shaBad = lab.publish(bad, lab.standIn(bad, good: false))
        let upgrade = try await lab.apply(try lab.state(bad, shaBad, readyTimeout: "3s"))
        let condition = try #require(upgrade.condition)
        #expect(condition.status == .stalled, "not retried: a person must change spec.k3s")
        #expect(condition.reason == "UpgradeRolledBack")
        #expect(condition.message.contains("K3s \(bad) was not Ready within 3s (node vps-1 runs \(v1), not \(bad))"), "\(condition.message)")
        #expect(condition.message.contains("rolled back to \(v1), which is Ready again"), "\(condition.message)")
        #expect(lab.binarySHA256 == sha1)
        // The bad stand-in did run, then the good one again.
        #expect(lab.log.contains("stand-in k3s \(bad) (bad) started"))
        #expect(lab.log.components(separatedBy: "stand-in k3s \(v1) (good) started").count == 3, "\(lab.log)")

        // The same desired state is not tried again: no download, no restart, still Failed.
        let downloads = lab.store.requests.withLock { $0 }
        let pid = lab.pid
        let again = try await lab.apply(try lab.state(bad, shaBad, readyTimeout: "3s"))
        #expect(again.changes.isEmpty)
        #expect(again.condition?.reason == "UpgradeRolledBack")
        #expect(again.condition?.message.contains("not tried again until spec.k3s changes") == true)
        #expect(lab.store.requests.withLock { $0 } == downloads)
        #expect(lab.pid == pid)

        // A good upgrade goes through and keeps the previous binary for a manual rollback.
        let v2 = "v1.31.5+k3s1"
        let sha2 = lab.publish(v2, lab.standIn(v2, good: true))
        let upgraded = try await lab.apply(try lab.state(v2, sha2))
        #expect(upgraded.condition == .ready("K3s \(v2), node vps-1 Ready"), "\(upgraded)")
        #expect(upgraded.changes.map(\.description).first == "~ k3s binary /usr/local/bin/k3s \(v1) → \(v2)")
        #expect(lab.nodeVersion == v2)
        #expect((try? Data(contentsOf: URL(fileURLWithPath: lab.root + "/var/lib/nodeagent/k3s/previous/k3s"))).map { Digest.sha256Hex(Array($0)) } == sha1)

        // Back a minor version: refused, unless explicitly allowed.
        let old = "v1.30.8+k3s1"
        let shaOld = lab.publish(old, lab.standIn(old, good: true))
        let down = try await lab.plan(try lab.state(old, shaOld))
        #expect(down.condition?.reason == "DowngradeRefused")
        #expect(down.condition?.message.contains("K3s \(v2) is installed and \(old) is a lower minor version") == true)
        let allowed = try await lab.plan(try lab.state(old, shaOld, extra: "    allowMinorDowngrade: true"))
        #expect(allowed.changes.first?.description == "~ k3s binary /usr/local/bin/k3s \(v2) → \(old)")
        await lab.stop()
    }

    /// A node set up by K3s's install.sh (no config.yaml, its own unit), adopted by nodeagent:
    /// a failed upgrade restores it exactly — the config file nodeagent wrote goes again — and
    /// a K3s that stopped is started, not rolled back.
    @Test func anAdoptedK3sIsRestoredExactly_andAStoppedOneIsStarted() async throws {
        let lab = try await K3sLab()
        let v1 = "v1.31.4+k3s1"
        let files = RootedFileSystem(root: lab.root)
        try files.write("/usr/local/bin/k3s", lab.standIn(v1, good: true), mode: 0o755)
        let theirUnit = Array("[Service]\nExecStart=/usr/local/bin/k3s server\n".utf8)
        try files.write("/etc/systemd/system/k3s.service", theirUnit, mode: 0o644)
        let supervisor = ProcessSupervisor(root: lab.root)
        try await supervisor.start("k3s.service")

        let bad = "v1.32.0+k3s1"
        let shaBad = lab.publish(bad, lab.standIn(bad, good: false))
        let plan = try await lab.plan(try lab.state(bad, shaBad, readyTimeout: "3s"))
        #expect(plan.changes.first?.description == "~ k3s binary /usr/local/bin/k3s \(v1) → \(bad)", "\(plan)")
        let upgrade = try await lab.apply(try lab.state(bad, shaBad, readyTimeout: "3s"))
        #expect(upgrade.condition?.reason == "UpgradeRolledBack")
        #expect(upgrade.condition?.message.contains("rolled back to \(v1), which is Ready again") == true, "\(String(describing: upgrade.condition))")
        #expect(try files.read("/etc/rancher/k3s/config.yaml") == nil)
        #expect(try files.read("/etc/systemd/system/k3s.service") == theirUnit)

        // K3s dies (not nodeagent's doing): the next pass only starts it; nothing is recorded.
        try await supervisor.stop("k3s.service")
        let stopped = try await lab.apply(try lab.state(bad, shaBad, readyTimeout: "3s"))
        #expect(stopped.changes.map(\.description) == ["! unit k3s.service start, then wait up to 3s for the node to be Ready"])
        #expect(try await supervisor.isActive("k3s.service"))
        #expect(stopped.condition?.reason == "UpgradeRolledBack", "still the rolled-back version: \(String(describing: stopped.condition))")
        await lab.stop()
    }
}
