import Foundation
import Glibc
import Logging
import Testing
import TestSupport
@testable import NodeAgent
import Reconcilers
import YAML

/// A real OpenSSH server in a network namespace of its own (198.51.100.10 on its loopback):
/// key-only, `internal-sftp` forced, its own host key; the node's commands run inside the
/// namespace (`ip netns exec`). Removed, with its process, whatever happens.
final class SFTPServer: @unchecked Sendable {
    let ns: String
    let dir: String
    let address = "198.51.100.10"
    var pid: Int32?
    let runner = SystemCommandRunner()

    init() async throws {
        ns = "nasftp\(String(UInt32.random(in: 0...0xFFFFF), radix: 16))"
        dir = Fixtures.temporaryDirectory()
        do {
            try await runner.check(Command("ip", ["netns", "add", ns]))
            try await runner.check(Command("ip", ["-n", ns, "link", "set", "lo", "up"]))
            try await runner.check(Command("ip", ["-n", ns, "addr", "add", "\(address)/32", "dev", "lo"]))
            try FileManager.default.createDirectory(atPath: dir + "/repo", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
            try await runner.check(Command("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", dir + "/host_key"]))
            try await runner.check(Command("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "node", "-f", dir + "/client_key"]))
            try FileManager.default.copyItem(atPath: dir + "/client_key.pub", toPath: dir + "/authorized_keys")
            try """
                ListenAddress \(address):22
                HostKey \(dir)/host_key
                PidFile \(dir)/sshd.pid
                AuthorizedKeysFile \(dir)/authorized_keys
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                UsePAM no
                StrictModes no
                PermitRootLogin prohibit-password
                Subsystem sftp internal-sftp
                ForceCommand internal-sftp
                """.write(toFile: dir + "/sshd_config", atomically: true, encoding: .utf8)
            try await start()
        } catch {
            await stop()
            throw error
        }
    }

    func start() async throws {
        try await runner.check(Command("ip", ["netns", "exec", ns, "/usr/sbin/sshd", "-f", dir + "/sshd_config", "-E", dir + "/sshd.log"]))
        for _ in 0..<100 {
            if let text = try? String(contentsOfFile: dir + "/sshd.pid", encoding: .utf8), let p = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                pid = p
                break
            }
            usleep(20_000)
        }
        #expect(pid != nil, "sshd did not start: \((try? String(contentsOfFile: dir + "/sshd.log", encoding: .utf8)) ?? "")")
    }

    /// Stops the server (the namespace stays: the address then refuses connections).
    func halt() {
        if let pid { kill(pid, SIGTERM) }
        for _ in 0..<100 where pid.map({ kill($0, 0) == 0 }) ?? false { usleep(20_000) }
        pid = nil
        try? FileManager.default.removeItem(atPath: dir + "/sshd.pid")
    }

    func stop() async {
        halt()
        _ = try? await runner.run(Command("ip", ["netns", "del", ns]))
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// The known_hosts line that pins this server's key.
    var knownHosts: String {
        let key = (try? String(contentsOfFile: dir + "/host_key.pub", encoding: .utf8)) ?? ""
        return "\(address) " + key.split(separator: " ").prefix(2).joined(separator: " ") + "\n"
    }
}

/// A node root whose desired state copies off-site; planted secrets to look for everywhere.
struct OffsiteNode {
    let root: String
    let state: String
    let repository: String
    let password = "restic-pw-\(UInt64.random(in: 0...UInt64.max))"
    let wireguardKey = "wg-private-\(UInt64.random(in: 0...UInt64.max))="
    let k3sToken = "K10-token-\(UInt64.random(in: 0...UInt64.max))::server:abc"
    let envSecret = "env-secret-\(UInt64.random(in: 0...UInt64.max))"

    init(repository: String? = nil, offsite extra: String = "", backups: String = "", plantState: Bool = true) throws {
        root = Fixtures.temporaryDirectory()
        state = root + "/platform.yaml"
        self.repository = repository ?? (Fixtures.temporaryDirectory() + "/repo")
        try secret("/etc/nodeagent/secrets/restic-password", password + "\n")
        // A backend variable the local repository does not use: planted, to be looked for.
        try secret("/etc/nodeagent/secrets/restic.env", "# restic's environment\nexport AWS_SECRET_ACCESS_KEY=\"\(envSecret)\"\n")
        if plantState {
            try secret("/etc/nodeagent/secrets/wg0.key", wireguardKey + "\n")
            try secret("/var/lib/rancher/k3s/server/token", k3sToken + "\n")
            try secret("/var/lib/nodeagent/applied/commit", "0123456789abcdef0123456789abcdef01234567\n")
            let db = root + "/var/lib/rancher/k3s/server/db/state.db"
            try FileManager.default.createDirectory(atPath: root + "/var/lib/rancher/k3s/server/db", withIntermediateDirectories: true)
            let r = Command("sqlite3", [db, "PRAGMA journal_mode=WAL; CREATE TABLE kine (id INTEGER PRIMARY KEY, name TEXT, value BLOB); "
                                        + "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 500) "
                                        + "INSERT INTO kine (name, value) SELECT '/registry/configmaps/x' || x, randomblob(200) FROM s;"])
            let result = try runSync(r)
            guard result.exitCode == 0 else { throw CommandError(code: .failed, command: "sqlite3", message: result.stderr) }
        }
        try """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: vps-1}
            spec:
              backups:
            \(backups)
                offsite:
                  repository: \(self.repository)
                  passwordFile: /etc/nodeagent/secrets/restic-password
                  environmentFile: /etc/nodeagent/secrets/restic.env
            \(extra)
            """.write(toFile: state, atomically: true, encoding: .utf8)
        if plantState { try secret("/var/lib/nodeagent/applied/platform.yaml", try String(contentsOfFile: state, encoding: .utf8)) }
    }

    func secret(_ path: String, _ text: String) throws {
        try FileManager.default.createDirectory(atPath: root + (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: root + path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
    }

    /// A replacement node's root: only what its user-data writes (the off-site credentials).
    func replacement() throws -> String {
        let fresh = Fixtures.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: fresh + "/etc/nodeagent/secrets", withIntermediateDirectories: true)
        for name in ["restic-password", "restic.env"] {
            try FileManager.default.copyItem(atPath: root + "/etc/nodeagent/secrets/" + name, toPath: fresh + "/etc/nodeagent/secrets/" + name)
        }
        return fresh
    }

    /// `nodeagent ARGS --state … --root …`, in `ns` when given.
    func run(_ arguments: [String], ns: String? = nil, root other: String? = nil) async throws -> CommandResult {
        let argv = arguments + ["--state", state, "--root", other ?? root]
        let command = ns.map { Command("ip", ["netns", "exec", $0, Binary.path] + argv, timeout: .seconds(300)) }
            ?? Command(Binary.path, argv, timeout: .seconds(300))
        return try await SystemCommandRunner().run(command)
    }

    /// restic itself on the repository (the test's view of it).
    func restic(_ arguments: [String]) async throws -> CommandResult {
        try await SystemCommandRunner().run(Command("restic", arguments, environment: [
            "RESTIC_REPOSITORY": repository, "RESTIC_PASSWORD": password, "RESTIC_CACHE_DIR": root + "/test-cache"], timeout: .seconds(300)))
    }

    func snapshots() async throws -> [JSONValue] {
        JSONValue.parse(Array(try await restic(["snapshots", "--json", "--no-lock"]).stdout.utf8))?.array ?? []
    }

    var record: OffsiteRecord { OffsiteRecord.load(RootedFileSystem(root: root)) }
    var recordText: String { (try? String(contentsOfFile: root + OffsiteRecord.path, encoding: .utf8)) ?? "" }

    func remove() {
        try? FileManager.default.removeItem(atPath: root)
        if repository.hasPrefix("/tmp/nodeagent-test-") { try? FileManager.default.removeItem(atPath: (repository as NSString).deletingLastPathComponent) }
    }

    /// Every planted secret that appears in `text`.
    func leaks(_ text: String) -> [String] { [password, wireguardKey, k3sToken, envSecret].filter { text.contains($0) } }
}

/// A short tool run to its end from synchronous code (sqlite3 on a fixture).
func runSync(_ command: Command) throws -> (exitCode: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [command.executable] + command.arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

@Suite("Off-site copies with real restic (local and SFTP repositories), restores and node recovery", .serialized)
struct OffsiteTests {
    let runner = SystemCommandRunner()

    /// The issue's "done when": with the local dumps deleted and the database dropped, the
    /// off-site copy brings back identical tables; a fresh root recovers the node's identity,
    /// datastore, applied revision and database rows; nothing secret reaches any output.
    @Test func theOffsiteCopyOutlivesTheNode() async throws {
        let server = try await PostgresServer()
        // The server goes whatever happens (a thrown error skips the end of the body).
        do {
            try await copyOutlivesTheNode(server)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    func copyOutlivesTheNode(_ server: PostgresServer) async throws {
        let node = try OffsiteNode(offsite: "      keep: {last: 5}\n", backups: """
                postgres:
                  connection: {host: 127.0.0.1, port: \(server.port), user: postgres, passwordFile: /etc/nodeagent/secrets/pg, sslmode: disable}
                  databases: [app]
                  schedule: "0 3 * * *"
                  restoreDrill: {schedule: "0 4 * * 0", from: offsite}
            """)
        defer { node.remove() }
        try node.secret("/etc/nodeagent/secrets/pg", server.password + "\n")
        try await server.loadDataset(into: "app")
        // Several MB that compress little: the dump spans many of restic's chunks.
        try await server.sql("CREATE TABLE noise AS SELECT i, md5(i::text) || md5((i * 7)::text) AS v FROM generate_series(1, 400000) i;", db: "app")
        let before = try await server.tableDigests("app")
        var outputs = ""

        let first = try await node.run(["backup", "run"])
        outputs += first.stdout + first.stderr
        #expect(first.exitCode == 0, "\(first.stdout)\(first.stderr)")
        #expect(first.stdout.contains("app: ok"))
        #expect(first.stdout.contains("offsite: ok: snapshot"), "\(first.stdout)")
        let snapshots = try await node.snapshots()
        #expect(snapshots.count == 1)
        let tags = Set((snapshots.first?["tags"]?.array ?? []).compactMap(\.string))
        #expect(tags.isSuperset(of: ["nodeagent", "node:vps-1", "db:app", "holds:postgres", "holds:secrets", "holds:k3s", "holds:state"]), "\(tags)")
        #expect(snapshots.first?["hostname"]?.string == "vps-1")
        let firstAdded = try #require(node.record.addedBytes)

        // Unchanged data: the second copy adds almost nothing (restic's deduplication).
        let second = try await node.run(["backup", "run"])
        #expect(second.exitCode == 0, "\(second.stdout)\(second.stderr)")
        let secondAdded = try #require(node.record.addedBytes)
        #expect(secondAdded * 4 < firstAdded, "second copy added \(secondAdded) bytes, the first \(firstAdded)")

        // The local copy is gone and the database dropped: the off-site copy restores it.
        try FileManager.default.removeItem(atPath: node.root + "/var/backups/nodeagent/postgres")
        try await server.sql("DROP DATABASE app")
        let restore = try await node.run(["backup", "restore", "--from", "offsite:app", "--to", "app"])
        outputs += restore.stdout + restore.stderr
        #expect(restore.exitCode == 0, "\(restore.stdout)\(restore.stderr)")
        #expect(restore.stdout.contains("from off-site snapshot"))
        #expect(try await server.tableDigests("app") == before)
        #expect(!FileManager.default.fileExists(atPath: node.root + "/var/lib/nodeagent/offsite/restore"), "the unpacked copy is removed")
        // A named snapshot too, and one that does not exist.
        let id = try #require(try await node.snapshots().last?["short_id"]?.string)
        let named = try await node.run(["backup", "restore", "--from", "offsite:app@\(id)", "--to", "app_copy"])
        #expect(named.exitCode == 0, "\(named.stderr)")
        #expect(try await server.tableDigests("app_copy") == before)
        let missing = try await node.run(["backup", "restore", "--from", "offsite:app@deadbeef", "--to", "app_x"])
        #expect(missing.exitCode == 1 && missing.stderr.contains("NoSnapshot"), "\(missing.stderr)")

        // The drill restores the off-site copy into the scratch database.
        let drill = try await node.run(["backup", "drill"])
        #expect(drill.exitCode == 0 && drill.stdout.contains("from off-site"), "\(drill.stdout)\(drill.stderr)")

        let listed = try await node.run(["backup", "list", "--offsite", "-o", "json"])
        let entries = JSONValue.parse(Array(listed.stdout.utf8))?.array ?? []
        #expect(entries.count == 2, "keep.last 5 keeps both runs of the day")
        #expect(entries.last?["databases"] == .array([.string("app")]))

        // A replacement node: only the repository key is there (its user-data wrote it).
        let fresh = try node.replacement()
        defer { try? FileManager.default.removeItem(atPath: fresh) }
        try await server.sql("DROP DATABASE app")
        let recovered = try await node.run(["recover", "--from-offsite"], root: fresh)
        outputs += recovered.stdout + recovered.stderr
        #expect(recovered.exitCode == 0, "\(recovered.stdout)\(recovered.stderr)")
        for step in ["secrets:", "k3s: datastore into /var/lib/rancher/k3s/server/db/state.db", "k3s: server token", "state: the applied revision",
                     "postgres:", "database app: restored"] {
            #expect(recovered.stdout.contains(step), "\(step) in \(recovered.stdout)")
        }
        func read(_ root: String, _ path: String) -> String? { try? String(contentsOfFile: root + path, encoding: .utf8) }
        #expect(read(fresh, "/etc/nodeagent/secrets/wg0.key") == node.wireguardKey + "\n")
        #expect(read(fresh, "/var/lib/rancher/k3s/server/token") == node.k3sToken + "\n")
        #expect(read(fresh, "/var/lib/nodeagent/applied/commit") == read(node.root, "/var/lib/nodeagent/applied/commit"))
        let query = "SELECT count(*) || ':' || (SELECT sum(length(value)) FROM kine) FROM kine;"
        let original = try runSync(Command("sqlite3", [node.root + "/var/lib/rancher/k3s/server/db/state.db", query])).stdout
        #expect(try runSync(Command("sqlite3", [fresh + "/var/lib/rancher/k3s/server/db/state.db", query])).stdout == original)
        #expect(original.hasPrefix("500:"))
        #expect(try await server.tableDigests("app") == before)
        let mode = try FileManager.default.attributesOfItem(atPath: fresh + "/etc/nodeagent/secrets/wg0.key")[.posixPermissions] as? Int
        #expect(mode == 0o600)

        // Never over a node that has state.
        let again = try await node.run(["recover", "--from-offsite"], root: fresh)
        #expect(again.exitCode == 1 && again.stderr.contains("NodeHasState"), "\(again.stderr)")
        // Told to (--force): again, but app now holds tables: left alone, and Stalled until a
        // person restores it; a restore into app settles it.
        let forced = try await node.run(["recover", "--from-offsite", "--force"], root: fresh)
        outputs += forced.stdout + forced.stderr
        #expect(forced.exitCode == 0, "\(forced.stdout)\(forced.stderr)")
        let unrestored = try #require(RecoveryRecord.load(RootedFileSystem(root: fresh)))
        #expect(unrestored.unrestoredDatabases == ["app"] && unrestored.pendingDatabases.isEmpty, "\(unrestored)")
        let platform = try DesiredStateLoader.load(path: node.state)
        let stalled = BackupsReconciler.condition(.init(spec: platform.spec.backups?.postgres, offsite: platform.spec.backups?.offsite),
                                                  BackupState.load(RootedFileSystem(root: fresh)), OffsiteRecord(), unrestored,
                                                  now: Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000)))
        #expect(stalled.status == Condition.Status.stalled && stalled.reason == "RecoveryDatabaseNotRestored", "\(stalled)")
        // Meanwhile app is not dumped (its tables are not the node's): the copy still goes.
        let held = try await node.run(["backup", "run"], root: fresh)
        #expect(held.exitCode == 1 && held.stdout.contains("dumps: NOT RUN RecoveryPending") && held.stdout.contains("offsite: ok"),
                "\(held.stdout)\(held.stderr)")
        let byHand = try await node.run(["backup", "restore", "--from", "offsite:app@\(try #require(unrestored.snapshot))", "--to", "app", "--force"],
                                        root: fresh)
        #expect(byHand.exitCode == 0, "\(byHand.stdout)\(byHand.stderr)")
        #expect(RecoveryRecord.load(RootedFileSystem(root: fresh))?.unrestoredDatabases == [])
        #expect(try await server.tableDigests("app") == before)

        for file in [OffsiteRecord.path, RecoveryRecord.path, BackupState.path] {
            outputs += read(fresh, file) ?? ""
            outputs += read(node.root, file) ?? ""
        }
        #expect(node.leaks(outputs).isEmpty, "a planted secret reached an output")
    }

    /// A recovered node whose PostgreSQL does not answer yet: the recovery puts everything
    /// else in place and says the database waits; once the server answers, the database comes
    /// back from exactly the snapshot's dump, and the condition turns from Progressing.
    @Test func aRecoveredDatabaseWaitsForItsServer() async throws {
        let server = try await PostgresServer()
        do {
            try await databaseWaits(server)
        } catch {
            await server.stop()
            throw error
        }
        await server.stop()
    }

    func databaseWaits(_ server: PostgresServer) async throws {
        let postgres = { (port: Int) in """
                postgres:
                  connection: {host: 127.0.0.1, port: \(port), user: postgres, passwordFile: /etc/nodeagent/secrets/pg, sslmode: disable}
                  databases: [app]
                  schedule: "0 3 * * *"
            """ }
        let node = try OffsiteNode(backups: postgres(server.port))
        defer { node.remove() }
        try node.secret("/etc/nodeagent/secrets/pg", server.password + "\n")
        try await server.sql("CREATE DATABASE app")
        try await server.sql("CREATE TABLE t AS SELECT i, md5(i::text) AS v FROM generate_series(1, 2000) i;", db: "app")
        let before = try await server.tableDigests("app")
        #expect(try await node.run(["backup", "run"]).exitCode == 0)
        try await server.sql("DROP DATABASE app")

        // The replacement's desired state names a server that does not answer (yet).
        let fresh = try node.replacement()
        defer { try? FileManager.default.removeItem(atPath: fresh) }
        let down = try OffsiteNode(repository: node.repository, backups: postgres(TLSTestPeer.freePort()), plantState: false)
        defer { try? FileManager.default.removeItem(atPath: down.root) }
        let recovered = try await SystemCommandRunner().run(Command(Binary.path, ["recover", "--from-offsite", "--state", down.state, "--root", fresh],
                                                                    timeout: .seconds(300)))
        #expect(recovered.exitCode == 0, "\(recovered.stdout)\(recovered.stderr)")
        #expect(recovered.stdout.contains("databases app: not yet"), "\(recovered.stdout)")
        let files = RootedFileSystem(root: fresh)
        let waiting = try #require(RecoveryRecord.load(files))
        #expect(waiting.pendingDatabases == ["app"] && waiting.databaseMessage?.hasPrefix("waiting for PostgreSQL") == true, "\(waiting)")
        let platform = try DesiredStateLoader.load(path: node.state)
        let now = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
        let desired = BackupsReconciler.Desired(spec: platform.spec.backups?.postgres, offsite: platform.spec.backups?.offsite)
        #expect(BackupsReconciler.condition(desired, BackupState.load(files), OffsiteRecord(), waiting, now: now).reason == "RecoveringDatabases")

        // The server answers: the daemon's call restores exactly the recovered dump.
        let backups = try #require(PostgresBackups(platform: platform, host: Reconcilers.Host(root: fresh), cluster: nil))
        let after = try #require(await backups.restorePendingDatabases())
        #expect(after.pendingDatabases.isEmpty && after.restoredDatabases == ["app"], "\(after)")
        #expect(try await server.tableDigests("app") == before)
        #expect(BackupsReconciler.condition(desired, BackupState.load(files), OffsiteRecord(), after, now: now).reason != "RecoveringDatabases")
    }

    /// An SFTP repository on a real OpenSSH server: the host key pinned, the key only; a
    /// changed host key, a refused login and a stopped server fail with their reasons and
    /// change nothing in the repository.
    @Test func anSFTPRepositoryWithAPinnedHostKey() async throws {
        let sftp = try await SFTPServer()
        do {
            try await sftpRepository(sftp)
        } catch {
            await sftp.stop()
            throw error
        }
        await sftp.stop()
    }

    func sftpRepository(_ sftp: SFTPServer) async throws {
        let node = try OffsiteNode(repository: "sftp:root@\(sftp.address):\(sftp.dir)/repo", offsite: """
                  sshKeyFile: /etc/nodeagent/secrets/offsite-key
                  knownHostsFile: /etc/nodeagent/offsite-known-hosts
            """)
        defer { node.remove() }
        try node.secret("/etc/nodeagent/secrets/offsite-key", try String(contentsOfFile: sftp.dir + "/client_key", encoding: .utf8))
        try node.secret("/etc/nodeagent/offsite-known-hosts", sftp.knownHosts)
        let keyBody = try String(contentsOfFile: sftp.dir + "/client_key", encoding: .utf8).split(separator: "\n")[1]

        let run = try await node.run(["backup", "run"], ns: sftp.ns)
        #expect(run.exitCode == 0, "\(run.stdout)\(run.stderr)")
        let listed = try await node.run(["backup", "list", "--offsite"], ns: sftp.ns)
        #expect(listed.exitCode == 0 && listed.stdout.contains("k3s,secrets,state"), "\(listed.stdout)\(listed.stderr)")
        // The repository on the server holds it (read there directly).
        let direct = try await SystemCommandRunner().run(Command("restic", ["snapshots", "--json", "--no-lock"], environment: [
            "RESTIC_REPOSITORY": sftp.dir + "/repo", "RESTIC_PASSWORD": node.password, "RESTIC_CACHE_DIR": node.root + "/test-cache"]))
        let firstID = try #require((JSONValue.parse(Array(direct.stdout.utf8))?.array ?? []).first?["id"]?.string)
        #expect(!run.stdout.contains(String(keyBody)) && !run.stderr.contains(String(keyBody)))

        // Another server answering at the address: its key is not the pinned one.
        try await runner.check(Command("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", node.root + "/other_host"]))
        let otherHostKey = try String(contentsOfFile: node.root + "/other_host.pub", encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
        try node.secret("/etc/nodeagent/offsite-known-hosts", "\(sftp.address) \(otherHostKey)\n")
        let wrongHost = try await node.run(["backup", "run"], ns: sftp.ns)
        #expect(wrongHost.exitCode == 1 && wrongHost.stdout.contains("FAILED HostKeyMismatch"), "\(wrongHost.stdout)\(wrongHost.stderr)")
        try node.secret("/etc/nodeagent/offsite-known-hosts", sftp.knownHosts)

        // A key the server does not know.
        try await runner.check(Command("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", node.root + "/other"]))
        try node.secret("/etc/nodeagent/secrets/offsite-key", try String(contentsOfFile: node.root + "/other", encoding: .utf8))
        let refused = try await node.run(["backup", "run"], ns: sftp.ns)
        #expect(refused.exitCode == 1 && refused.stdout.contains("FAILED LoginRefused"), "\(refused.stdout)\(refused.stderr)")
        try node.secret("/etc/nodeagent/secrets/offsite-key", try String(contentsOfFile: sftp.dir + "/client_key", encoding: .utf8))

        // The server is down: unreachable, and the record keeps the last good copy.
        sftp.halt()
        let down = try await node.run(["backup", "run"], ns: sftp.ns)
        #expect(down.exitCode == 1 && down.stdout.contains("FAILED Unreachable"), "\(down.stdout)\(down.stderr)")
        #expect(node.record.copy?.ok == false && node.record.copy?.lastSuccess != nil)
        let condition = BackupsReconciler.condition(.init(spec: nil, offsite: try DesiredStateLoader.load(path: node.state).spec.backups!.offsite!),
                                                    BackupState(), node.record, nil, now: Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000)))
        #expect(condition.status == Condition.Status.failed && condition.reason == "OffsiteUnreachable", "\(condition)")
        try await sftp.start()
        let back = try await node.run(["backup", "run"], ns: sftp.ns)
        #expect(back.exitCode == 0, "\(back.stdout)\(back.stderr)")
        // The default retention keeps the newest snapshot of the day: the new one, alone.
        let kept = JSONValue.parse(Array(try await SystemCommandRunner().run(Command("restic", ["snapshots", "--json", "--no-lock"], environment: [
            "RESTIC_REPOSITORY": sftp.dir + "/repo", "RESTIC_PASSWORD": node.password, "RESTIC_CACHE_DIR": node.root + "/test-cache"])).stdout.utf8))?.array ?? []
        #expect(kept.count == 1 && kept.first?["id"]?.string != firstID, "\(kept)")
    }

    /// A wrong key, a full destination, `kill -9` in the middle of an upload and a corrupted
    /// pack: each fails with its reason; nothing partial is ever listed; the next run completes.
    @Test func failuresLeaveNothingPartial() async throws {
        let node = try OffsiteNode(offsite: """
                  paths: [/data]
                  check: {readDataSubset: 100%}
                  keep: {last: 10}
            """)
        defer { node.remove() }
        try FileManager.default.createDirectory(atPath: node.root + "/data", withIntermediateDirectories: true)
        try Data("small\n".utf8).write(to: URL(fileURLWithPath: node.root + "/data/small"))
        let good = try await node.run(["backup", "run"])
        #expect(good.exitCode == 0, "\(good.stdout)\(good.stderr)")

        // The wrong key: refused, needs a person.
        try node.secret("/etc/nodeagent/secrets/restic-password", "not-the-key\n")
        let wrong = try await node.run(["backup", "run"])
        #expect(wrong.exitCode == 1 && wrong.stdout.contains("FAILED WrongPassword"), "\(wrong.stdout)\(wrong.stderr)")
        let spec = try DesiredStateLoader.load(path: node.state).spec.backups!.offsite!
        let now = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
        #expect(BackupsReconciler.condition(.init(spec: nil, offsite: spec), BackupState(), node.record, nil, now: now).status == Condition.Status.stalled)
        try node.secret("/etc/nodeagent/secrets/restic-password", node.password + "\n")

        // A line of the environment file that is not KEY=value: refused without a word of it.
        try node.secret("/etc/nodeagent/secrets/restic.env", "c2VjcmV0LWxpbmUtbm90LWEta2V5+/x\n")
        let badEnv = try await node.run(["backup", "run"])
        #expect(badEnv.exitCode == 1 && badEnv.stdout.contains("FAILED EnvironmentFileInvalid"), "\(badEnv.stdout)\(badEnv.stderr)")
        #expect(!(badEnv.stdout + badEnv.stderr + node.recordText).contains("c2VjcmV0LWxpbmUtbm90"))
        try node.secret("/etc/nodeagent/secrets/restic.env", "AWS_SECRET_ACCESS_KEY=\(node.envSecret)\n")

        // kill -9 in the middle of an upload (nodeagent and restic both, as a crash would).
        let big = node.root + "/data/big"
        try await runner.check(Command("sh", ["-c", "head -c 64000000 /dev/urandom > \(big)"], timeout: .seconds(60)))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Binary.path)
        process.arguments = ["backup", "run", "--state", node.state, "--root", node.root]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        var resticPID: Int32?
        // Mid-upload: restic has written packs of the new data (pack files, not the 256
        // directories `init` made), and is frozen there before both are killed.
        let before = Self.packs(node.repository).count
        for _ in 0..<1500 {
            resticPID = Self.child(of: process.processIdentifier, named: "restic")
            if resticPID != nil, Self.packs(node.repository).count >= before + 2 { break }
            usleep(20_000)
        }
        let pid = try #require(resticPID, "restic never started")
        kill(pid, SIGSTOP)
        // restic's command line and what it was started with: no key, no backend secret.
        let argv = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
        #expect(!argv.isEmpty && node.leaks(argv).isEmpty, "a secret on restic's command line")
        #expect(Self.packs(node.repository).count >= before + 2, "killed before any pack of the new data was written")
        kill(pid, SIGKILL)
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(try await node.snapshots().count == 1, "the killed upload is not listed")
        let after = try await node.run(["backup", "run"])
        #expect(after.exitCode == 0, "\(after.stdout)\(after.stderr)")
        #expect(try await node.snapshots().count == 2)
        let check = try await node.run(["backup", "check"])
        #expect(check.exitCode == 0 && check.stdout.contains("check: ok"), "\(check.stdout)\(check.stderr)")
        try FileManager.default.removeItem(atPath: big)

        // A full destination: the repository's disk has room for no more.
        let fullRepo = Fixtures.temporaryDirectory()
        try await runner.check(Command("mount", ["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", fullRepo]))
        defer {
            umount2(fullRepo, Int32(MNT_DETACH))
            try? FileManager.default.removeItem(atPath: fullRepo)
        }
        let small = try OffsiteNode(repository: fullRepo + "/repo", offsite: "      paths: [/data]\n", plantState: false)
        defer { small.remove() }
        try FileManager.default.createDirectory(atPath: small.root + "/data", withIntermediateDirectories: true)
        try Data("small\n".utf8).write(to: URL(fileURLWithPath: small.root + "/data/small"))
        #expect(try await small.run(["backup", "run"]).exitCode == 0)
        try await runner.check(Command("sh", ["-c", "head -c 6000000 /dev/urandom > \(small.root)/data/big"], timeout: .seconds(60)))
        let full = try await small.run(["backup", "run"])
        #expect(full.exitCode == 1 && full.stdout.contains("FAILED DestinationFull"), "\(full.stdout)\(full.stderr)")
        #expect(try await small.snapshots().count == 1)

        // A corrupted pack: the check reads it back and fails; the condition says so. (Pruned
        // first: the killed upload's packs are referenced by no index, and a check skips them.)
        let prune = try await node.run(["backup", "prune"])
        #expect(prune.exitCode == 0 && prune.stdout.contains("prune: ok"), "\(prune.stdout)\(prune.stderr)")
        // A pack the index refers to (restic's own list), the largest: the big file's data.
        let referenced = Set(try await node.restic(["list", "packs", "--no-lock"]).stdout.split(separator: "\n").map(String.init))
        let packs = Self.packs(node.repository).filter { referenced.contains(($0 as NSString).lastPathComponent) }
        let victim = try #require(packs.max { (Self.size($0)) < (Self.size($1)) })
        chmod(victim, 0o600)
        let handle = try #require(FileHandle(forUpdatingAtPath: victim))
        try handle.seek(toOffset: UInt64(Self.size(victim) / 2))
        try handle.write(contentsOf: Data(repeating: 0x5A, count: 64))
        try handle.close()
        let corrupt = try await node.run(["backup", "check"])
        #expect(corrupt.exitCode == 1 && corrupt.stdout.contains("FAILED CheckFailed"), "\(corrupt.stdout)\(corrupt.stderr)")
        #expect(node.record.check?.ok == false)
        let condition = BackupsReconciler.condition(.init(spec: nil, offsite: spec), BackupState(), node.record, nil, now: now)
        #expect(condition.reason == "OffsiteCheckFailed", "\(condition)")
        let metrics = AgentMetrics()
        metrics.offsite(node.record)
        #expect(String(decoding: metrics.exposition(), as: UTF8.self).contains("nodeagent_offsite_check_ok 0"))
    }

    /// The pack files of a local repository (`data/ab/ab…`).
    static func packs(_ repository: String) -> [String] {
        ((FileManager.default.enumerator(atPath: repository + "/data")?.allObjects as? [String]) ?? [])
            .filter { $0.count > 10 }.map { repository + "/data/" + $0 }
    }

    static func size(_ path: String) -> Int { ((try? FileManager.default.attributesOfItem(atPath: path)[.size]) as? Int) ?? 0 }

    /// A direct child of `parent` running `name` (from /proc).
    static func child(of parent: Int32, named name: String) -> Int32? {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let comm = stat[stat.index(after: stat.firstIndex(of: "(")!)..<close]
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            if comm == name, fields.count > 1, Int32(fields[1]) == parent { return pid }
        }
        return nil
    }

    /// `recover: offsite` at the daemon's first pass: a fresh node restores itself before the
    /// engine runs; a repository that does not answer holds the pass (no new identity); a
    /// node with state is left alone.
    @Test func theFirstPassRecoversBeforeAnythingElse() async throws {
        let original = try OffsiteNode()
        defer { original.remove() }
        #expect(try await original.run(["backup", "run"]).exitCode == 0)

        // A replacement: only the key, same desired state.
        let fresh = try original.replacement()
        defer { try? FileManager.default.removeItem(atPath: fresh) }
        let host = Reconcilers.Host(root: fresh)
        let engine = try Engine(BuiltInReconcilers.all(on: host, options: PassOptions()))
        let test = TestLoop(state: original.state, engine: engine, host: host, recoverFromOffsite: true)
        await test.loop.pass()
        let record = try #require(RecoveryRecord.load(host.files))
        #expect(record.outcome == .recovered, "\(record)")
        #expect((try? String(contentsOfFile: fresh + "/etc/nodeagent/secrets/wg0.key", encoding: .utf8)) == original.wireguardKey + "\n")
        let status = await test.status.json
        #expect(status["recovery"]?["outcome"]?.string == "recovered")
        // The off-site line is there; this node has made no copy of its own yet.
        #expect(status["offsite"]?["repository"]?.string == original.repository && status["offsite"]?["lastSuccess"] == .null,
                "\(status["offsite"] ?? .null)")
        #expect(status["applied"]?["commit"]?.string == "0123456789abcdef0123456789abcdef01234567")
        #expect(original.leaks(status.jsonText).isEmpty)
        // Settled: the next pass does not recover again, even with the record's node state gone.
        try FileManager.default.removeItem(atPath: fresh + "/etc/nodeagent/secrets/wg0.key")
        await test.loop.pass()
        #expect(!FileManager.default.fileExists(atPath: fresh + "/etc/nodeagent/secrets/wg0.key"))

        // A repository that does not answer: the pass waits, nothing is recorded.
        let lonely = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: lonely) }
        let unreachable = try OffsiteNode(repository: "sftp://backup@127.0.0.1:1//nowhere", offsite: """
                  sshKeyFile: /etc/nodeagent/secrets/offsite-key
                  knownHostsFile: /etc/nodeagent/offsite-known-hosts
            """, plantState: false)
        defer { unreachable.remove() }
        try unreachable.secret("/etc/nodeagent/secrets/offsite-key", "key\n")
        let uhost = Reconcilers.Host(root: unreachable.root)
        let waiting = TestLoop(state: unreachable.state, engine: try Engine(BuiltInReconcilers.all(on: uhost, options: PassOptions())), host: uhost,
                               recoverFromOffsite: true)
        await waiting.loop.pass()
        #expect(RecoveryRecord.load(uhost.files) == nil)
        let events = await waiting.status.json["events"]?.array ?? []
        #expect(events.contains { ($0["message"]?.string ?? "").contains("recovery from off-site failed (Unreachable)") }, "\(events)")
        #expect(await waiting.status.json["passes"]?.int == 0, "the engine did not run")
        // Meanwhile no backup job runs and no copy leaves the node (a blank node's copy would
        // become the newest snapshot).
        #expect(!waiting.loop.recoverySettled())
        let blank = await OffsiteBackups(platform: try DesiredStateLoader.load(path: unreachable.state), host: uhost)!.copy()
        #expect(blank.notRun?.hasPrefix("RecoveryUnderWay") == true && blank.copy == nil, "\(blank)")

        // No repository at all (a typo, an unmounted disk): not a first life, the pass waits.
        let nowhere = try OffsiteNode(repository: lonely + "/not-a-repository", plantState: false)
        defer { nowhere.remove() }
        let nhost = Reconcilers.Host(root: nowhere.root)
        let missing = TestLoop(state: nowhere.state, engine: try Engine(BuiltInReconcilers.all(on: nhost, options: PassOptions())), host: nhost,
                               recoverFromOffsite: true)
        await missing.loop.pass()
        #expect(RecoveryRecord.load(nhost.files) == nil)
        #expect((await missing.status.json["events"]?.array ?? []).contains { ($0["message"]?.string ?? "").contains("NoRepository") })
        // A repository that exists and holds nothing of this node: its first life.
        #expect(try await nowhere.run(["backup", "init"]).exitCode == 0)
        await missing.loop.pass()
        #expect(RecoveryRecord.load(nhost.files)?.outcome == .nothing)
        #expect(missing.loop.recoverySettled())

        // A recovery that stopped half-way (the datastore and revision in place, not the key)
        // resumes from the snapshot it had chosen instead of refusing a node "with state".
        let half = try original.replacement()
        defer { try? FileManager.default.removeItem(atPath: half) }
        let hhost = Reconcilers.Host(root: half)
        let chosen = try #require(try await original.snapshots().last?["id"]?.string)
        try RecoveryRecord.markUnderWay(hhost.files, snapshot: chosen)
        try hhost.files.write("/var/lib/nodeagent/applied/commit", Array("half\n".utf8), mode: 0o600)
        let resume = TestLoop(state: original.state, engine: try Engine(BuiltInReconcilers.all(on: hhost, options: PassOptions())), host: hhost,
                              recoverFromOffsite: true)
        await resume.loop.pass()
        #expect(RecoveryRecord.load(hhost.files)?.outcome == .recovered)
        #expect((try? String(contentsOfFile: half + "/etc/nodeagent/secrets/wg0.key", encoding: .utf8)) == original.wireguardKey + "\n")
        #expect(RecoveryRecord.underWay(hhost.files) == nil)

        // A node with state of its own: left alone, and said.
        let lived = try OffsiteNode(repository: original.repository)
        defer { lived.remove() }
        let lhost = Reconcilers.Host(root: lived.root)
        let skip = TestLoop(state: lived.state, engine: try Engine(BuiltInReconcilers.all(on: lhost, options: PassOptions())), host: lhost,
                            recoverFromOffsite: true)
        try lived.secret("/etc/nodeagent/secrets/restic-password", original.password + "\n")
        await skip.loop.pass()
        #expect(RecoveryRecord.load(lhost.files)?.outcome == .skipped)
        #expect((try? String(contentsOfFile: lived.root + "/etc/nodeagent/secrets/wg0.key", encoding: .utf8)) == lived.wireguardKey + "\n")
    }

    /// Refused desired states: credentials in the URL, sftp without its pinned key, a bad subset.
    @Test func badOffsiteSpecsAreRefusedWithTheirField() throws {
        func load(_ offsite: String) -> String {
            let text = """
                apiVersion: nodeagent/v1
                kind: Platform
                metadata: {name: vps-1}
                spec:
                  backups:
                    offsite:
                \(offsite)
                """
            do {
                _ = try DesiredStateLoader.load(Array(text.utf8), file: "platform.yaml")
                return "accepted"
            } catch {
                return error.diagnostics.map(\.description).joined(separator: "\n")
            }
        }
        #expect(load("      repository: rest:https://u:hunter2@backup.example.com/vps\n      passwordFile: /etc/nodeagent/secrets/p").contains("spec.backups.offsite.repository"))
        #expect(!load("      repository: rest:https://u:hunter2@backup.example.com/vps\n      passwordFile: /etc/nodeagent/secrets/p").contains("hunter2"))
        #expect(load("      repository: sftp:u@h:/r\n      passwordFile: /etc/nodeagent/secrets/p").contains("sshKeyFile"))
        #expect(load("      repository: ftp://x\n      passwordFile: /etc/nodeagent/secrets/p").contains("restic's backends"))
        #expect(load("      repository: /mnt/b\n      passwordFile: /etc/nodeagent/secrets/p\n      check: {readDataSubset: 120%}").contains("readDataSubset"))
        #expect(load("      repository: /mnt/b\n      passwordFile: /var/lib/nodeagent/p").contains("another system's credentials"))
        #expect(load("      repository: /mnt/b\n      passwordFile: /etc/nodeagent/secrets/p\n      keep: {daily: 0, weekly: 0, monthly: 0}").contains("keep at least one"))
        #expect(load("      repository: s3:https://s3.gra.io.cloud.ovh.net/bucket/vps-1\n      passwordFile: /etc/nodeagent/secrets/p\n      environmentFile: /etc/nodeagent/secrets/s3.env\n      check: {readDataSubset: 1/7}") == "accepted")
        #expect(load("      repository: sftp://backup@storage.example.com:2222//nodes/vps-1\n      passwordFile: /etc/nodeagent/secrets/p\n      sshKeyFile: /etc/nodeagent/secrets/k\n      knownHostsFile: /etc/nodeagent/kh") == "accepted")
        #expect(OffsiteSpec.Check.validSubset("5%") && OffsiteSpec.Check.validSubset("2.5%") && OffsiteSpec.Check.validSubset("500M"))
        #expect(!OffsiteSpec.Check.validSubset("0%") && !OffsiteSpec.Check.validSubset("3/2") && !OffsiteSpec.Check.validSubset("x"))
    }
}
