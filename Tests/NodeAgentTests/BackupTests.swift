import Foundation
import Glibc
import Synchronization
import Testing
import TestSupport
import KubeTestServer
import Reconcilers
import YAML

/// A real PostgreSQL server for one test: a cluster made by `initdb` in a temp directory (run
/// as the `postgres` user, as the server refuses root), password authentication on
/// 127.0.0.1 at a free port, stopped and removed at the end.
final class PostgresServer: @unchecked Sendable {
    let dir: String
    let port: Int
    let password = "pg-\(UInt32.random(in: 0...UInt32.max))-secret"
    let bin: String
    let runner = SystemCommandRunner()

    init() async throws {
        let versions = try FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql").compactMap(Int.init).sorted()
        let major = try #require(versions.last, "install postgresql (the server) to run the backup tests")
        bin = "/usr/lib/postgresql/\(major)/bin"
        dir = Fixtures.temporaryDirectory()
        port = TLSTestPeer.freePort()
        try password.write(toFile: dir + "/pw", atomically: true, encoding: .utf8)
        try await runner.check(Command("chmod", ["0755", dir]))
        try await runner.check(Command("chown", ["-R", "postgres:postgres", dir]))
        try await runner.check(Command("runuser", ["-u", "postgres", "--", bin + "/initdb", "-D", dir + "/data", "-U", "postgres",
                                                   "--pwfile=\(dir)/pw", "--auth=scram-sha-256", "-E", "UTF8", "--no-locale"],
                                       timeout: .seconds(120)))
        try await runner.check(Command("runuser", ["-u", "postgres", "--", bin + "/pg_ctl", "-D", dir + "/data", "-l", dir + "/log", "-w",
                                                   "-o", "-p \(port) -k \(dir) -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                                       timeout: .seconds(60)))
    }

    func stop() async {
        _ = try? await runner.run(Command("runuser", ["-u", "postgres", "--", bin + "/pg_ctl", "-D", dir + "/data", "-m", "immediate", "stop"],
                                          timeout: .seconds(30)))
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Runs SQL with psql; - Returns: the unaligned, tuples-only output.
    @discardableResult
    func sql(_ statements: String, db: String = "postgres") async throws -> String {
        let r = try await runner.run(Command(bin + "/psql", ["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", String(port),
                                                              "-U", "postgres", "-d", db],
                                             environment: ["PGPASSWORD": password], input: Array(statements.utf8), timeout: .seconds(60)))
        guard r.exitCode == 0 else { throw CommandError(code: .failed, command: "psql", message: r.stderr) }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Awkward types, a sequence, a partitioned table, a view, a quoted schema, a role with a grant.
    func loadDataset(into db: String) async throws {
        try await sql("CREATE DATABASE \(db)")
        try await sql(#"""
            DO $$ BEGIN CREATE ROLE app_reader LOGIN PASSWORD 'reader-pw'; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
            CREATE TABLE kinds (id serial PRIMARY KEY, blob bytea, doc jsonb, tags text[], amount numeric(20,6), at timestamptz, note text);
            INSERT INTO kinds (blob, doc, tags, amount, at, note)
              SELECT decode(md5(i::text), 'hex') || '\x00ff'::bytea,
                     jsonb_build_object('i', i, 'nested', jsonb_build_array(i, 'x', null), 'uni', 'ünï €'),
                     ARRAY['a', 'b,c', 'd"e', NULL], i * 1.123456, '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 hour',
                     repeat('long text ', 2000) || i
              FROM generate_series(1, 300) i;
            CREATE SEQUENCE counter START 1000;
            SELECT nextval('counter'); SELECT nextval('counter');
            CREATE TABLE events (id bigint, at date NOT NULL, payload text) PARTITION BY RANGE (at);
            CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
            CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
            INSERT INTO events SELECT i, date '2025-06-01' + i, 'e' || i FROM generate_series(1, 400) i;
            CREATE VIEW big_amounts AS SELECT id, amount FROM kinds WHERE amount > 100;
            GRANT SELECT ON kinds, big_amounts TO app_reader;
            CREATE SCHEMA "odd ""schema""";
            CREATE TABLE "odd ""schema"""."Mixed Case" (x int, y text);
            INSERT INTO "odd ""schema"""."Mixed Case" VALUES (1, 'a'), (2, NULL), (3, E'tab\there');
            """#, db: db)
    }

    /// Per table, an md5 of its rows in a fixed order: equal digests, equal contents.
    func tableDigests(_ db: String) async throws -> [String: String] {
        let tables = try await sql("""
            SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1
            """, db: db).split(separator: "\n").map(String.init)
        var out: [String: String] = [:]
        for table in tables {
            out[table] = try await sql("SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM \(table) t", db: db)
        }
        return out
    }
}

/// Runs commands for real and remembers each one.
final class RecordingRunner: CommandRunner {
    let commands = Mutex<[Command]>([])
    let real = SystemCommandRunner()

    func run(_ command: Command) async throws(CommandError) -> CommandResult {
        commands.withLock { $0.append(command) }
        return try await real.run(command)
    }
}

@Suite("PostgreSQL backups, drills and restores against a real PostgreSQL server", .serialized)
struct BackupTests {
    let runner = SystemCommandRunner()

    struct Node {
        let root: String
        let state: String

        /// A desired state in `root` whose backups reach `server` directly.
        init(server: PostgresServer, keep: Int = 2, extra: String = "") throws {
            root = Fixtures.temporaryDirectory()
            state = root + "/platform.yaml"
            try FileManager.default.createDirectory(atPath: root + "/etc/nodeagent/secrets", withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: root + "/etc/nodeagent/secrets/pg", contents: Data((server.password + "\n").utf8),
                                           attributes: [.posixPermissions: 0o600])
            try """
                apiVersion: nodeagent/v1
                kind: Platform
                metadata: {name: vps-1}
                spec:
                  backups:
                    postgres:
                      connection: {host: 127.0.0.1, port: \(server.port), user: postgres, passwordFile: /etc/nodeagent/secrets/pg, sslmode: disable}
                      databases: [app]
                      schedule: "0 3 * * *"
                      keep: \(keep)
                      restoreDrill: {schedule: "0 4 * * 0"}
                \(extra)
                """.write(toFile: state, atomically: true, encoding: .utf8)
        }

        func run(_ arguments: [String], environment: [String: String?] = [:]) async throws -> CommandResult {
            try await SystemCommandRunner().run(Command(Binary.path, arguments + ["--state", state, "--root", root], environment: environment,
                                                        timeout: .seconds(120)))
        }

        func list() async throws -> [JSONValue] {
            JSONValue.parse(Array(try await run(["backup", "list", "-o", "json"]).stdout.utf8))?.array ?? []
        }

        var backupState: BackupState { BackupState.load(RootedFileSystem(root: root)) }

        func remove() { try? FileManager.default.removeItem(atPath: root) }
    }

    @Test func roundTripRotationDrillAndRestore() async throws {
        let server = try await PostgresServer()
        let node = try Node(server: server)
        defer { node.remove() }
        try await server.loadDataset(into: "app")

        var made: [String] = []
        let folder = node.root + "/var/backups/nodeagent/postgres"
        for i in 0..<3 {
            if i == 2 {
                // As an earlier version left them: a directory and a dump others can read.
                chmod(folder, 0o755)
                chmod(folder + "/app", 0o755)
                let first = try #require(try FileManager.default.contentsOfDirectory(atPath: folder + "/app").first { $0.hasSuffix(".dump") })
                chmod(folder + "/app/" + first, 0o644)
            }
            // From a root shell's umask: the dump must still be private.
            let r = try await SystemCommandRunner().run(Command("/bin/sh", ["-c", "umask 022; exec \"$0\" backup run --state \"$1\" --root \"$2\"",
                                                                             Binary.path, node.state, node.root], timeout: .seconds(120)))
            #expect(r.exitCode == 0, "\(r.stdout)\(r.stderr)")
            #expect(r.stdout.hasPrefix("app: ok: app-"), "\(r.stdout)")
            made.append(String(r.stdout.dropFirst("app: ok: ".count).prefix { $0 != ":" }))
        }
        for dir in [folder, folder + "/app", folder + "/globals"] {
            var st = stat()
            #expect(stat(dir, &st) == 0 && st.st_mode & 0o077 == 0, "\(dir) is private")
            for name in try FileManager.default.contentsOfDirectory(atPath: dir) {
                var f = stat()
                #expect(lstat(dir + "/" + name, &f) == 0 && f.st_mode & 0o077 == 0, "\(dir)/\(name) is mode \(String(f.st_mode & 0o777, radix: 8))")
            }
        }
        // keep: 2 — the oldest of three went, the newest two stayed; the roles were dumped too.
        let dumps = try await node.list()
        #expect(dumps.compactMap { $0["path"]?.string?.split(separator: "/").last.map(String.init) } == Array(made.suffix(2)), "\(made)")
        let newest = try #require(dumps.last)
        let tables = newest["tables"]?.array ?? []
        #expect(tables.contains { $0["name"]?.string == "kinds" && $0["rows"]?.int == 300 })
        let in2025 = Int(try await server.sql("SELECT count(*) FROM events_2025", db: "app"))
        #expect(in2025 == 213)
        #expect(tables.contains { $0["name"]?.string == "events_2025" && $0["rows"]?.int == in2025 })
        #expect(tables.contains { $0["name"]?.string == "events" && $0["rows"]?.int == 400 }, "the partitioned parent counts all its rows")
        #expect(tables.contains { $0["schema"]?.string == "odd \"schema\"" && $0["name"]?.string == "Mixed Case" && $0["rows"]?.int == 3 })
        let globals = try FileManager.default.contentsOfDirectory(atPath: node.root + "/var/backups/nodeagent/postgres/globals")
        #expect(globals.count == 2)
        let roles = try String(contentsOfFile: node.root + "/var/backups/nodeagent/postgres/globals/" + globals.sorted().last!, encoding: .utf8)
        #expect(roles.contains("CREATE ROLE app_reader"))
        let text = try await node.run(["backup", "list"])
        #expect(text.stdout.hasPrefix("DATABASE  FILE"), "\(text.stdout)")
        // No password anywhere in what the commands print, nor on a command line.
        #expect(!(text.stdout + text.stderr).contains(server.password))

        // Restore into a new database: identical, table by table.
        let path = try #require(newest["path"]?.string)
        let restored = try await node.run(["backup", "restore", "--from", path, "--to", "app_copy"])
        #expect(restored.exitCode == 0, "\(restored.stderr)")
        let original = try await server.tableDigests("app"), copy = try await server.tableDigests("app_copy")
        #expect(original.count == 5)
        #expect(original == copy)
        #expect(try await server.sql("SELECT last_value FROM counter", db: "app_copy") == "1001")
        #expect(try await server.sql("SELECT count(*) FROM big_amounts", db: "app_copy") == (try await server.sql("SELECT count(*) FROM big_amounts", db: "app")))
        #expect(try await server.sql("SELECT has_table_privilege('app_reader', 'kinds', 'SELECT')", db: "app_copy") == "t")
        // An existing database is not overwritten without --force.
        let refused = try await node.run(["backup", "restore", "--from", path, "--to", "app_copy"])
        #expect(refused.exitCode == 1)
        #expect(refused.stderr.contains("database app_copy exists; pass --force to replace it"))
        #expect(try await node.run(["backup", "restore", "--from", path, "--to", "app_copy", "--force"]).exitCode == 0)

        // The drill verifies and leaves no scratch database behind.
        let drill = try await node.run(["backup", "drill"])
        #expect(drill.exitCode == 0, "\(drill.stdout)\(drill.stderr)")
        #expect(drill.stdout.hasPrefix("drill: verified: restored and verified: app (app-"))
        #expect(try await server.sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'nodeagent_drill%'") == "0")
        #expect(node.backupState.drill?.ok == true)

        // A manifest whose row count disagrees with the restored data: RowCountMismatch, and the
        // scratch database (restored this time) is dropped all the same.
        let manifestPath = node.root + String(path.dropLast(".dump".count)) + ".json"
        let manifest = try String(contentsOfFile: manifestPath, encoding: .utf8)
        try manifest.replacingOccurrences(of: #""name":"kinds","rows":300"#, with: #""name":"kinds","rows":299"#)
            .write(toFile: manifestPath, atomically: true, encoding: .utf8)
        let mismatch = try await node.run(["backup", "drill"])
        #expect(mismatch.exitCode == 1)
        #expect(mismatch.stdout.contains("drill: FAILED RowCountMismatch: app: restored data differs: public.kinds: 300 rows, the manifest says 299"),
                "\(mismatch.stdout)")
        #expect(try await server.sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'nodeagent_drill%'") == "0")
        try manifest.write(toFile: manifestPath, atomically: true, encoding: .utf8)

        // One flipped byte in the newest dump: the drill fails on the checksum, before restoring.
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: node.root + path)))
        bytes[bytes.count / 2] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: node.root + path))
        let broken = try await node.run(["backup", "drill"])
        #expect(broken.exitCode == 1)
        #expect(broken.stdout.contains("drill: FAILED ChecksumMismatch: checksum mismatch"), "\(broken.stdout)")
        let state = node.backupState
        #expect(state.drill?.ok == false && state.drill?.reason == "ChecksumMismatch")
        #expect(state.failures["drill/ChecksumMismatch"] == 1 && state.failures["drill/RowCountMismatch"] == 1)
        #expect(BackupsReconciler.condition(try DesiredStateLoader.load(path: node.state).spec.backups!.postgres!, state,
                                            now: Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))).reason == "DrillFailed")
        #expect(try await server.sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'nodeagent_drill%'") == "0")
        await server.stop()
    }

    /// A server with database `app` (1000 rows), a node keeping 1 dump, and its first dump taken.
    func backedUpApp() async throws -> (PostgresServer, Node) {
        let server = try await PostgresServer()
        let node = try Node(server: server, keep: 1)
        try await server.sql("CREATE DATABASE app")
        try await server.sql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000);", db: "app")
        #expect(try await node.run(["backup", "run"]).exitCode == 0)
        return (server, node)
    }

    @Test func killedMidDumpAndServerDownLoseNothing() async throws {
        let (server, node) = try await backedUpApp()
        defer { node.remove() }
        let good = try await node.list()
        #expect(good.count == 1)

        // kill -9 after pg_dump wrote the partial file, before it became a dump.
        let killed = try await node.run(["backup", "run"], environment: ["NODEAGENT_CRASH_AT": "backup-dumped"])
        #expect(killed.signal == 9, "\(killed)")
        let folder = node.root + "/var/backups/nodeagent/postgres/app"
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).contains { $0.hasPrefix(".partial-") })
        #expect(try await node.list() == good, "a partial dump is never listed")
        // The next run cleans it up; keep: 1 rotates the old good dump only now that a new one exists.
        let next = try await node.run(["backup", "run"])
        #expect(next.exitCode == 0)
        #expect(next.stderr.contains("removed what an interrupted run left: .partial-app-"), "\(next.stderr)")
        let after = try await node.list()
        #expect(after.count == 1 && after != good)
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: folder)).contains { $0.hasPrefix(".partial-") })

        // The server goes away: the run fails cleanly, nothing is deleted.
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        await server.stop()
        let down = try await node.run(["backup", "run"])
        #expect(down.exitCode == 1)
        #expect(down.stdout.contains("app: FAILED ConnectionFailed: cannot connect to PostgreSQL at 127.0.0.1:\(server.port)"), "\(down.stdout)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).sorted() == files)
        #expect(try await node.list() == after)
        let state = node.backupState
        #expect(state.databases["app"]?.ok == false && state.databases["app"]?.lastSuccess != nil)
        let condition = BackupsReconciler.condition(try DesiredStateLoader.load(path: node.state).spec.backups!.postgres!, state,
                                                    now: Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000)))
        #expect(condition.reason == "BackupFailed" && condition.message.contains("last good dump at"))
    }

    @Test func theInClusterDatabaseIsFoundThroughTheCluster() async throws {
        let server = try await PostgresServer()
        let kube = try await KubeTestServer()
        let node = try Node(server: server, extra: """
              helmReleases:
                - {name: postgresql, chart: postgresql, repo: https://charts.bitnami.com/bitnami, version: 16.3.0, namespace: db}
            """)
        defer {
            node.remove()
            kube.stop()
        }
        // The same database, declared as the release's (the Bitnami chart's Service and Secret).
        var text = try String(contentsOfFile: node.state, encoding: .utf8)
        text = text.replacingOccurrences(of: #"connection: {host: 127.0.0.1, port: \#(server.port), user: postgres, passwordFile: /etc/nodeagent/secrets/pg, sslmode: disable}"#,
                                         with: "release: postgresql")
        try text.write(toFile: node.state, atomically: true, encoding: .utf8)
        try await server.sql("CREATE DATABASE app")
        let services = KubeTestServer.builtIn.first { $0.plural == "services" }!
        kube.put(services, namespace: "db", .object([
            "apiVersion": .string("v1"), "kind": .string("Service"),
            "metadata": .object(["name": .string("postgresql-hl"), "namespace": .string("db"),
                                 "labels": .object(["app.kubernetes.io/instance": .string("postgresql")])]),
            "spec": .object(["clusterIP": .string("None"), "ports": .array([.object(["name": .string("tcp-postgresql"), "port": .int(1)])])]),
        ]))
        kube.put(services, namespace: "db", .object([
            "apiVersion": .string("v1"), "kind": .string("Service"),
            "metadata": .object(["name": .string("postgresql"), "namespace": .string("db"),
                                 "labels": .object(["app.kubernetes.io/instance": .string("postgresql"), "app.kubernetes.io/component": .string("primary")])]),
            "spec": .object(["clusterIP": .string("127.0.0.1"), "ports": .array([.object(["name": .string("tcp-postgresql"), "port": .int(server.port)])])]),
        ]))
        kube.put(KubeTestServer.builtIn[2], namespace: "db", .object([
            "apiVersion": .string("v1"), "kind": .string("Secret"),
            "metadata": .object(["name": .string("postgresql"), "namespace": .string("db"),
                                 "labels": .object(["app.kubernetes.io/instance": .string("postgresql")])]),
            "data": .object(["postgres-password": .string(Data(server.password.utf8).base64EncodedString())]),
        ]))
        try kube.writeKubeconfig(to: node.root + "/kubeconfig.yaml")
        let r = try await node.run(["backup", "run", "--kubeconfig", node.root + "/kubeconfig.yaml"])
        #expect(r.exitCode == 0, "\(r.stdout)\(r.stderr)")
        #expect(try await node.list().count == 1)
        #expect(!(r.stdout + r.stderr).contains(server.password))
        await server.stop()
    }

    /// agent.yaml's stateDirectory is where all of nodeagent's state goes, a command's too:
    /// nothing under /var/lib/nodeagent.
    @Test func theStateDirectoryHoldsAllOfTheState() async throws {
        let server = try await PostgresServer()
        let node = try Node(server: server)
        defer { node.remove() }
        try await server.sql("CREATE DATABASE app")
        try """
            apiVersion: nodeagent/v1
            kind: AgentConfig
            source: {repo: "https://git.example.com/platform.git"}
            stateDirectory: /srv/nodeagent-state

            """.write(toFile: node.root + "/etc/nodeagent/agent.yaml", atomically: true, encoding: .utf8)
        let r = try await node.run(["backup", "run"])
        #expect(r.exitCode == 0, "\(r.stdout)\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: node.root + "/srv/nodeagent-state/backups/state.json"))
        #expect(!FileManager.default.fileExists(atPath: node.root + "/var/lib/nodeagent"), "nothing in the default place")
        // The library's view: the same node path, moved.
        let files = RootedFileSystem(root: node.root, stateDirectory: "/srv/nodeagent-state")
        #expect(files.hostPath("/var/lib/nodeagent/firewall/applied.nft") == node.root + "/srv/nodeagent-state/firewall/applied.nft")
        #expect(files.hostPath("/var/lib/nodeagentx") == node.root + "/var/lib/nodeagentx")
        #expect(BackupState.load(files).lastBackupRun != nil)
        await server.stop()
    }

    /// A CloudNativePG cluster (the `cluster` chart with fullnameOverride): its `pg-rw`
    /// Service and `pg-superuser` Secret, as the operator makes them.
    @Test func aCloudNativePGClusterIsFoundByItsServiceAndSecret() async throws {
        let server = try await PostgresServer()
        let kube = try await KubeTestServer()
        let node = try Node(server: server, extra: """
              helmReleases:
                - {name: cnpg, chart: cloudnative-pg, repo: "https://cloudnative-pg.github.io/charts", version: 0.29.0, namespace: cnpg-system}
                - {name: postgres, chart: cluster, repo: "https://cloudnative-pg.github.io/charts", version: 0.8.1, namespace: db,
                   dependsOn: [cnpg], values: {fullnameOverride: pg, cluster: {instances: 1}}}
            """)
        defer {
            node.remove()
            kube.stop()
        }
        var text = try String(contentsOfFile: node.state, encoding: .utf8)
        text = text.replacingOccurrences(of: #"connection: {host: 127.0.0.1, port: \#(server.port), user: postgres, passwordFile: /etc/nodeagent/secrets/pg, sslmode: disable}"#,
                                         with: "release: postgres")
        try text.write(toFile: node.state, atomically: true, encoding: .utf8)
        try await server.sql("CREATE DATABASE app")
        let services = KubeTestServer.builtIn.first { $0.plural == "services" }!
        for (name, ip) in [("pg-r", "127.0.0.9"), ("pg-rw", "127.0.0.1"), ("pg-ro", "127.0.0.8")] {
            kube.put(services, namespace: "db", .object([
                "apiVersion": .string("v1"), "kind": .string("Service"),
                "metadata": .object(["name": .string(name), "namespace": .string("db"), "labels": .object(["cnpg.io/cluster": .string("pg")])]),
                "spec": .object(["clusterIP": .string(ip), "ports": .array([.object(["name": .string("postgres"), "port": .int(server.port)])])]),
            ]))
        }
        let secrets = KubeTestServer.builtIn.first { $0.plural == "secrets" }!
        kube.put(secrets, namespace: "db", .object([
            "apiVersion": .string("v1"), "kind": .string("Secret"), "type": .string("kubernetes.io/basic-auth"),
            "metadata": .object(["name": .string("pg-superuser"), "namespace": .string("db")]),
            "data": .object(["username": .string(Data("postgres".utf8).base64EncodedString()),
                             "password": .string(Data(server.password.utf8).base64EncodedString())]),
        ]))
        try kube.writeKubeconfig(to: node.root + "/kubeconfig.yaml")
        let r = try await node.run(["backup", "run", "--kubeconfig", node.root + "/kubeconfig.yaml"])
        #expect(r.exitCode == 0, "\(r.stdout)\(r.stderr)")
        #expect(try await node.list().count == 1)
        #expect(!(r.stdout + r.stderr).contains(server.password))
        await server.stop()
    }

    /// The daemon runs the first backup at start (it never ran), and a drill once a dump
    /// exists (never ran either); both show in /metrics and /status.
    @Test func theDaemonSchedulesAndReports() async throws {
        let server = try await PostgresServer()
        let node = try Node(server: server)
        defer { node.remove() }
        try await server.sql("CREATE DATABASE app")
        try await server.sql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 10);", db: "app")
        let port = TLSTestPeer.freePort()
        let pid = try DetachedProcess.spawn([Binary.path, "run", "--state", node.state, "--root", node.root, "--listen", "127.0.0.1:\(port)", "--poll", "1s"],
                                            output: node.root + "/daemon.log")
        defer { DetachedProcess.stop(pid) }
        var metrics = ""
        for _ in 0..<150 where !metrics.contains("nodeagent_restore_drill_last_result_ok 1") {
            try await Task.sleep(for: .milliseconds(200))
            metrics = (try? await SystemCommandRunner().run(Command("curl", ["-s", "--max-time", "2", "http://127.0.0.1:\(port)/metrics"])))?.stdout ?? ""
        }
        #expect(metrics.contains("nodeagent_restore_drill_last_result_ok 1"), "\(metrics)\n\((try? String(contentsOfFile: node.root + "/daemon.log", encoding: .utf8)) ?? "")")
        #expect(metrics.contains("nodeagent_backup_last_success_timestamp_seconds{database=\"app\"}"))
        #expect(metrics.contains("nodeagent_backup_size_bytes{database=\"app\"}"))
        #expect(try await node.list().count == 1)
        // The backups reconciler reads the same state on the next pass: Ready, with the drill.
        var status = ""
        for _ in 0..<50 where !status.contains("drill verified at") {
            try await Task.sleep(for: .milliseconds(200))
            status = (try? await SystemCommandRunner().run(Command("curl", ["-s", "http://127.0.0.1:\(port)/status"])))?.stdout ?? ""
        }
        #expect(status.contains("drill verified at"), "\(status)")
        await server.stop()
    }

    /// The password reaches the client tools through a 0600 passfile, never their arguments;
    /// the passfile is gone afterwards.
    @Test func thePasswordIsNeverOnACommandLine() async throws {
        let server = try await PostgresServer()
        let node = try Node(server: server)
        defer { node.remove() }
        try await server.sql("CREATE DATABASE app")
        let recorder = RecordingRunner()
        let host = Reconcilers.Host(files: RootedFileSystem(root: node.root), commands: recorder, services: ProcessSupervisor(root: node.root),
                                    clock: SystemWallClock())
        let backups = try #require(PostgresBackups(platform: try DesiredStateLoader.load(path: node.state), host: host, cluster: nil))
        #expect(try await backups.backup()["app"]?.ok == true)
        #expect(try await backups.drill().ok)
        let commands = recorder.commands.withLock { $0 }
        #expect(commands.contains { $0.executable.hasSuffix("/pg_dump") } && commands.contains { $0.executable.hasSuffix("/pg_restore") })
        #expect(!commands.contains { ($0.arguments + [$0.executable]).joined(separator: " ").contains(server.password) })
        let dumps = commands.filter { $0.executable.hasSuffix("/pg_dump") && $0.arguments.contains("--format=custom") }
        #expect(dumps.count == 1 && dumps.allSatisfy { $0.environment["PGPASSFILE"] != nil })
        #expect(try RootedFileSystem(root: node.root).list("/var/lib/nodeagent/backups")?.contains { $0.hasPrefix(".pgpass") } == false)
        #expect(!(try String(contentsOfFile: node.root + BackupState.path, encoding: .utf8)).contains(server.password))
        await server.stop()
    }

    /// The dump directory on a small tmpfs: the dump that does not fit fails with the reason,
    /// takes its partial file with it, and the earlier dump stays listed and whole.
    @Test func aFullDiskFailsCleanlyAndLosesNothing() async throws {
        let server = try await PostgresServer()
        let node = try Node(server: server, keep: 1)
        let folder = node.root + "/var/backups/nodeagent/postgres"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try await runner.check(Command("mount", ["-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", folder]))
        defer {
            umount2(folder, Int32(MNT_DETACH))
            node.remove()
        }
        try await server.sql("CREATE DATABASE app")
        try await server.sql("CREATE TABLE t (x text); INSERT INTO t SELECT 'row ' || i FROM generate_series(1, 100) i;", db: "app")
        let first = try await node.run(["backup", "run"])
        #expect(first.exitCode == 0, "\(first.stdout)\(first.stderr)")
        let good = try await node.list()
        let goodBytes = try Data(contentsOf: URL(fileURLWithPath: node.root + (good.first?["path"]?.string ?? "")))
        // About 2 MB of random hex: pg_dump's compression cannot squeeze it into 512 kB.
        try await server.sql("INSERT INTO t SELECT md5(random()::text) || md5(random()::text) FROM generate_series(1, 30000);", db: "app")
        let full = try await node.run(["backup", "run"])
        #expect(full.exitCode == 1)
        #expect(full.stdout.contains("app: FAILED DumpFailed: pg_dump of app failed"), "\(full.stdout)")
        #expect(full.stdout.contains("No space left on device"), "\(full.stdout)")
        #expect(try await node.list() == good, "the earlier dump is still the one listed")
        #expect(try Data(contentsOf: URL(fileURLWithPath: node.root + (good.first?["path"]?.string ?? ""))) == goodBytes)
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: folder + "/app")).contains { $0.hasPrefix(".partial-") })
        #expect(node.backupState.databases["app"]?.reason == "DumpFailed")
        await server.stop()
    }

    /// pg_dump that fails, hangs (ignoring SIGTERM), writes garbage and exits 0, or crashes: a
    /// stand-in bind-mounted over the server's bin directory in a private mount namespace. Each
    /// run fails with the reason, within the (test-capped) timeout, reaps what hung, seals no
    /// dump and leaves no partial file; the good dump stays listed. Then the real one works.
    @Test func pgDumpFailingHangingOrLyingLosesNothing() async throws {
        let (server, node) = try await backedUpApp()
        defer { node.remove() }
        let good = try await node.list()
        let folder = node.root + "/var/backups/nodeagent/postgres/app"
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        let expected: [StandInTool.Mode: String] = [.fail: "DumpFailed: pg_dump of app failed: Error: stand-in pg_dump refuses",
                                                   .hang: "timed out after 1.5 seconds", .garbage: "DumpUnreadable: pg_restore --list",
                                                   .crash: "DumpFailed: pg_dump of app failed: killed by signal 11"]
        for mode in StandInTool.Mode.allCases {
            let standIn = try StandInTool("pg_dump", real: server.bin + "/pg_dump", match: "--snapshot", mode: mode,
                                          copies: [server.bin + "/pg_dumpall", server.bin + "/pg_restore"], copyReal: true)
            defer { standIn.remove() }
            let started = ContinuousClock.now
            let r = try await SystemCommandRunner().run(Command("unshare", ["--mount", "sh", "-c", "mount --bind \"$0\" \"$1\" && shift && exec \"$@\"",
                                                                            standIn.directory, server.bin, Binary.path, "backup", "run",
                                                                            "--state", node.state, "--root", node.root],
                                                                environment: ["NODEAGENT_TEST_COMMAND_TIMEOUT_MS": "1500"], timeout: .seconds(60)))
            print("fault pg_dump \(mode): exit \(r.exitCode.map(String.init) ?? "signal") in \(ContinuousClock.now - started): \(r.stdout.split(separator: "\n").first ?? "")")
            #expect(r.exitCode == 1, "\(mode): \(r.stdout)\(r.stderr)")
            #expect(r.stdout.contains("app: FAILED"), "\(mode): \(r.stdout)")
            #expect(r.stdout.contains(expected[mode] ?? "?"), "\(mode): \(r.stdout)")
            if mode == .hang {
                #expect(standIn.hangs() == 1)
                for _ in 0..<100 { if standIn.survivors().isEmpty { break }; try await Task.sleep(for: .milliseconds(50)) }
                #expect(standIn.survivors().isEmpty, "pg_dump was left running: \(standIn.survivors())")
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: folder).sorted() == files, "\(mode): a file was added or lost")
            #expect(try await node.list() == good)
        }
        let real = try await node.run(["backup", "run"])
        #expect(real.exitCode == 0, "\(real.stdout)\(real.stderr)")
        #expect(try await node.list() != good)
        await server.stop()
    }

    /// A read-only state directory: every backup command fails with the reason and exit 1, and
    /// the dumps already taken stay listed and whole.
    @Test func aReadOnlyStateDirectoryFailsCleanly() async throws {
        let server = try await PostgresServer()
        let node = try Node(server: server)
        let stateDir = node.root + "/var/lib/nodeagent/backups"
        defer {
            umount2(stateDir, Int32(MNT_DETACH))
            node.remove()
        }
        try await server.sql("CREATE DATABASE app")
        #expect(try await node.run(["backup", "run"]).exitCode == 0)
        let before = try await node.list()
        let dump = try Data(contentsOf: URL(fileURLWithPath: node.root + (before.first?["path"]?.string ?? "")))
        try await runner.check(Command("mount", ["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", stateDir]))
        for args in [["backup", "run"], ["backup", "drill"], ["backup", "restore", "--from", before.first?["path"]?.string ?? "", "--to", "copy"]] {
            let r = try await node.run(args)
            #expect(r.exitCode == 1, "\(args): \(r.stdout)\(r.stderr)")
            #expect(r.stderr.contains("Read-only file system"), "\(args): \(r.stderr)")
        }
        #expect(try await node.list() == before)
        #expect(try Data(contentsOf: URL(fileURLWithPath: node.root + (before.first?["path"]?.string ?? ""))) == dump)
        #expect(try await server.sql("SELECT count(*) FROM pg_database WHERE datname = 'copy'") == "0", "nothing was restored")
        await server.stop()
    }
}
