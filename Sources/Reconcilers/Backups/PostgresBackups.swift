#if canImport(Glibc)
internal import Glibc
#endif
import KubeClient
import YAML

/// Backups, restore drills and restores of the PostgreSQL databases in
/// `spec.backups.postgres`, with PostgreSQL's own tools (`pg_dump -Fc`, `pg_dumpall
/// --globals-only`, `pg_restore`) of the server's major version, and libpq for the snapshot the
/// row counts and the dump share. One job at a time per node (a lock file).
public struct PostgresBackups: Sendable {
    public let spec: PostgresBackup
    /// The namespace of `spec.release` (from `spec.helmReleases`).
    public let releaseNamespace: String?
    /// A CloudNativePG `cluster` chart release: the name of its Cluster (and so of its
    /// `NAME-rw` Service and `NAME-superuser` / `NAME-app` Secrets).
    public let cnpgCluster: String?
    /// The off-site copy (`spec.backups.offsite`), for drills from it.
    public var offsite: OffsiteBackups?
    let host: Host
    let cluster: ClusterAccess?
    let log: @Sendable (String) -> Void

    public init(spec: PostgresBackup, releaseNamespace: String?, cnpgCluster: String? = nil, host: Host, cluster: ClusterAccess?,
                log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.spec = spec
        self.releaseNamespace = releaseNamespace
        self.cnpgCluster = cnpgCluster
        self.host = host
        self.cluster = cluster
        self.log = log
    }

    public init?(platform: Platform, host: Host, cluster: ClusterAccess?, log: @escaping @Sendable (String) -> Void = { _ in }) {
        guard let spec = platform.spec.backups?.postgres else { return nil }
        let release = spec.release.flatMap { r in platform.spec.helmReleases?.first { $0.name == r } }
        self.init(spec: spec, releaseNamespace: release?.namespace.value, cnpgCluster: release.flatMap(Self.cnpgClusterName),
                  host: host, cluster: cluster, log: log)
        offsite = OffsiteBackups(platform: platform, host: host, log: log)
    }

    /// The Cluster a CloudNativePG `cluster` chart release makes (cloudnative-pg/charts,
    /// charts/cluster/templates/_helpers.tpl `cluster.fullname` at cluster-v0.8.1):
    /// `fullnameOverride`, else the release name when it contains the chart's name ("cluster",
    /// or `nameOverride`), else `RELEASE-cluster`. nil for any other chart.
    static func cnpgClusterName(_ release: HelmRelease) -> String? {
        guard release.chart == "cluster", release.repo?.value.contains("cloudnative-pg") == true else { return nil }
        if let full = release.values["fullnameOverride"]?.string, !full.isEmpty { return full }
        let chartName = release.values["nameOverride"]?.string ?? "cluster"
        return release.name.value.contains(chartName) ? release.name.value : "\(release.name.value)-\(chartName)"
    }

    public var store: BackupStore { BackupStore(directory: spec.directory.value, files: host.files) }
    static let stateDirectory = "/var/lib/nodeagent/backups"

    func hostPath(_ path: String) -> String { host.files.hostPath(path) }

    // MARK: - Where the database is

    /// The server: `connection`, or the release's Service and the password in its Secret
    /// (the Bitnami chart's: a Service labelled `app.kubernetes.io/instance=RELEASE` that is
    /// not headless, key `postgres-password`, user `postgres`).
    public func target() async throws -> PostgresTarget {
        if let c = spec.connection {
            let password = try c.passwordFile.map { file -> String in
                guard let text = try SecretSource.files(host.files).read(file, for: "backups.postgres.connection.passwordFile") else { return "" }
                return text
            }
            return PostgresTarget(host: c.host.text, port: Int(c.port.value), user: c.user, password: password, sslmode: c.sslmode.rawValue,
                                  origin: "\(c.host.text):\(c.port.value)")
        }
        guard let release = spec.release?.value, let namespace = releaseNamespace, let cluster else {
            throw ReconcileError(.stalled, reason: "NoDatabase", "backups.postgres.release names no declared Helm release")
        }
        if let cnpg = cnpgCluster { return try await cnpgTarget(cnpg, release: release, namespace: namespace, cluster: cluster) }
        do {
            let api = try cluster.api()
            let selector = "app.kubernetes.io/instance=\(release)"
            let services = try await api.list(ResourceRef(plural: "services", namespace: namespace), labelSelector: selector)
            let candidates = services.filter { ($0["spec"]?["clusterIP"]?.string ?? "None") != "None" }
            guard let service = candidates.first(where: { $0["metadata"]?["labels"]?["app.kubernetes.io/component"]?.string == "primary" }) ?? candidates.first,
                  let ip = service["spec"]?["clusterIP"]?.string else {
                throw ReconcileError(.waiting, reason: "NoDatabase", "no Service of release \(release) in namespace \(namespace) (yet)")
            }
            let ports = service["spec"]?["ports"]?.array ?? []
            let port = (ports.first { $0["name"]?.string == "tcp-postgresql" } ?? ports.first)?["port"]?.int ?? 5432
            let secrets = try await api.list(ResourceRef(plural: "secrets", namespace: namespace), labelSelector: selector)
            let password = secrets.lazy.compactMap { KubeViews.secretData($0)["postgres-password"] }.first
            guard let password else {
                throw ReconcileError(.waiting, reason: "NoDatabase", "no Secret of release \(release) holds postgres-password (yet)")
            }
            let name = service["metadata"]?["name"]?.string ?? "?"
            return PostgresTarget(host: ip, port: port, user: "postgres", password: String(decoding: password, as: UTF8.self), sslmode: "prefer",
                                  origin: "release \(release) (Service \(namespace)/\(name) \(ip):\(port))")
        } catch {
            throw ReconcileError.kube(error, doing: "finding the database of release \(release)")
        }
    }

    /// A CloudNativePG cluster: its read-write Service `NAME-rw` (port 5432), and the
    /// superuser's Secret `NAME-superuser` (keys `username`, `password`; made when
    /// `enableSuperuserAccess` is true), else the owner's `NAME-app` (cloudnative-pg
    /// `pkg/specs/secrets.go`, `docs/src/applications.md`).
    func cnpgTarget(_ name: String, release: String, namespace: String, cluster: ClusterAccess) async throws -> PostgresTarget {
        do {
            let api = try cluster.api()
            guard let service = try await api.getIfPresent(ResourceRef(plural: "services", namespace: namespace, name: "\(name)-rw")),
                  let ip = service["spec"]?["clusterIP"]?.string, ip != "None" else {
                throw ReconcileError(.waiting, reason: "NoDatabase", "no Service \(namespace)/\(name)-rw of the CloudNativePG cluster \(name) (yet)")
            }
            let port = service["spec"]?["ports"]?.array?.first?["port"]?.int ?? 5432
            var credentials: (user: String, password: String, secret: String)?
            for secret in ["\(name)-superuser", "\(name)-app"] where credentials == nil {
                guard let object = try await api.getIfPresent(ResourceRef(plural: "secrets", namespace: namespace, name: secret)) else { continue }
                let data = KubeViews.secretData(object)
                if let user = data["username"], let password = data["password"] {
                    credentials = (String(decoding: user, as: UTF8.self), String(decoding: password, as: UTF8.self), secret)
                }
            }
            guard let credentials else {
                throw ReconcileError(.waiting, reason: "NoDatabase",
                                     "neither \(namespace)/\(name)-superuser nor \(name)-app holds a username and password (yet)")
            }
            if credentials.secret.hasSuffix("-app") {
                log("backups: \(name)-superuser does not exist (enableSuperuserAccess is off): using the application owner from \(credentials.secret)")
            }
            return PostgresTarget(host: ip, port: port, user: credentials.user, password: credentials.password, sslmode: "prefer",
                                  origin: "release \(release) (CloudNativePG cluster \(name), Service \(namespace)/\(name)-rw \(ip):\(port), Secret \(credentials.secret))")
        } catch {
            throw ReconcileError.kube(error, doing: "finding the database of release \(release)")
        }
    }

    // MARK: - Backup

    /// Dumps every database (or `only`), then the roles, rotates, and records the results.
    /// - Returns: each database's result.
    public func backup(only: [String]? = nil) async throws -> [String: BackupState.Result] {
        let lock = try BackupLock(files: host.files)
        defer { lock.release() }
        try removeStalePassfiles()
        var state = BackupState.load(host.files)
        // Only a run of every database counts as the scheduled run.
        if only == nil { state.lastBackupRun = host.clock.now() }
        var results: [String: BackupState.Result] = [:]
        let databases = only ?? spec.databases.map(\.value)
        var target: PostgresTarget?
        var targetError: (reason: String, message: String)?
        do {
            target = try await self.target()
        } catch let error as ReconcileError {
            targetError = (error.reason, error.message)
        }
        for database in databases {
            let started = host.clock.now()
            let result: BackupState.Result
            do {
                guard let target else { throw PostgresError(reason: targetError!.reason, message: targetError!.message) }
                let manifest = try await dump(database, target: target)
                let rotated = try store.rotate(database, keep: spec.keep, protect: manifest.file)
                if !rotated.isEmpty { log("backup \(database): rotated out \(rotated.joined(separator: ", "))") }
                result = BackupState.Result(at: started, ok: true, reason: "Succeeded",
                                            message: "\(manifest.file): \(manifest.size) bytes, \(manifest.tables.count) tables",
                                            durationSeconds: manifest.durationSeconds, sizeBytes: manifest.size)
                log("backup \(database): \(result.message) in \(manifest.durationSeconds) s")
            } catch {
                let (reason, message) = Self.describe(error)
                result = BackupState.Result(at: started, ok: false, reason: reason, message: message,
                                            durationSeconds: Double(host.clock.now().millisecondsSinceEpoch - started.millisecondsSinceEpoch) / 1000)
                state.failures["backup/\(reason)", default: 0] += 1
                log("backup \(database) failed (\(reason)): \(message); earlier dumps are kept")
            }
            results[database] = result
            state.databases[database] = BackupState.merge(result, into: state.databases[database])
        }
        if let target, results.values.contains(where: \.ok) {
            do {
                try await dumpGlobals(target)
            } catch {
                let (reason, message) = Self.describe(error)
                state.failures["globals/\(reason)", default: 0] += 1
                log("roles (pg_dumpall --globals-only) failed: \(message)")
            }
        }
        try state.save(host.files)
        return results
    }

    /// One database: a snapshot in a repeatable-read transaction, the exact row count of every
    /// table in it, `pg_dump --snapshot` of the same snapshot into a partial file, fsync,
    /// checksum, rename, then the manifest. Removes what an interrupted run left first.
    func dump(_ database: String, target: PostgresTarget) async throws -> BackupManifest {
        let folder = store.folder(database)
        try makePrivateDirectory(spec.directory.value)
        try makePrivateDirectory(folder)
        let leftovers = try store.removeLeftovers(database)
        if !leftovers.isEmpty { log("backup \(database): removed what an interrupted run left: \(leftovers.joined(separator: ", "))") }
        let started = host.clock.now()
        let session = try await Offload.run { try PostgresSession(target, database: database) }
        let (snapshot, version, major, tables) = try await Offload.run { () throws -> (String, String, Int, [BackupManifest.Table]) in
            try session.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            let snapshot = try session.query("SELECT pg_export_snapshot()").first?.first ?? nil
            let version = try session.query("SHOW server_version").first?.first ?? nil
            let number = Int((try session.query("SHOW server_version_num").first?.first ?? nil) ?? "") ?? 0
            return (snapshot ?? "", version ?? "?", number / 10000, try Self.countRows(session))
        }
        let tools = try await PostgresTools.find(serverMajor: major, commands: host.commands, system: host.system)
        let name = "\(database)-\(BackupStore.stamp(started)).dump"
        let partial = "\(folder)/.partial-\(name)"
        // A failed dump takes its partial file with it at once (on a full disk, the space).
        do {
            // Made 0600 first: pg_dump keeps the mode of a file it writes into, and would
            // otherwise create it with the caller's umask (0644 from a root shell).
            try createPrivate(partial)
            try await dumpInto(partial: partial, database: database, snapshot: snapshot, tools: tools, target: target)
        } catch {
            try? host.files.remove(partial)
            throw error
        }
        _ = try? await Offload.run { try session.query("COMMIT") }
        FaultInjection.crashIfRequested(at: "backup-dumped")
        do {
            // pg_dump said it succeeded; the archive must also read as one (its table of
            // contents), or it is not sealed as a backup.
            try await run(Command(tools.pgRestore, ["--list", hostPath(partial)], timeout: .seconds(300), outputLimit: 64 << 20),
                          reason: "DumpUnreadable", what: "pg_restore --list of the dump of \(database)")
        } catch {
            try? host.files.remove(partial)
            throw error
        }
        return try await seal(partial: partial, name: name, folder: folder, database: database, started: started, version: version,
                              tools: tools, tables: tables)
    }

    /// A backup directory, made 0700 or tightened to it: dumps hold every row of a database.
    func makePrivateDirectory(_ path: String) throws {
        try host.files.makeDirectory(path, mode: 0o700)
        guard try host.files.list(path) != nil else {
            throw FileSystemError(operation: "use", path: path, errno: ENOTDIR, problem: .notDirectory)
        }
        try host.files.restrict(path, to: 0o700)
        // Dumps an earlier version left with the caller's umask (0644).
        for name in try host.files.list(path) ?? [] where name.hasSuffix(".dump") || name.hasSuffix(".json") || name.hasSuffix(".sql") {
            try host.files.restrict("\(path)/\(name)", to: 0o600)
        }
    }

    /// An empty file only root can read, whatever the umask (pg_dump then writes into it).
    func createPrivate(_ path: String) throws {
        try host.files.write(path, [], mode: 0o600)
    }

    func dumpInto(partial: String, database: String, snapshot: String, tools: PostgresTools, target: PostgresTarget) async throws {
        try await withPassfile(target) { env in
            // --lock-wait-timeout: a schema change queued behind the row counts' locks must not
            // deadlock pg_dump against this session (PostgreSQL cannot see that wait).
            try await run(Command(tools.pgDump, ["--format=custom", "--no-password", "--snapshot=\(snapshot)", "--lock-wait-timeout=300s",
                                                 "--file=\(hostPath(partial))",
                                                 "--dbname=\(Self.conninfo(target, database: database))"],
                                  environment: env, timeout: .seconds(6 * 3600)), reason: "DumpFailed", what: "pg_dump of \(database)")
        }
    }

    /// Checksum, rename into place, then the manifest: from here on it is a backup.
    func seal(partial: String, name: String, folder: String, database: String, started: Timestamp, version: String,
              tools: PostgresTools, tables: [BackupManifest.Table]) async throws -> BackupManifest {
        let sha = try await Offload.run { try host.files.sha256(partial) ?? "" }
        let size = try host.files.size(partial) ?? 0
        try host.files.move(partial, to: "\(folder)/\(name)", mode: 0o600)
        let manifest = BackupManifest(database: database, file: name, size: size, sha256: sha, startedAt: started, finishedAt: host.clock.now(),
                                      serverVersion: version, pgDumpVersion: tools.version, tables: tables)
        try host.files.write("\(folder)/\(String(name.dropLast(".dump".count))).json",
                             Array((manifest.json.jsonText + "\n").utf8), mode: 0o600)
        return manifest
    }

    func dumpGlobals(_ target: PostgresTarget) async throws {
        let session = try await Offload.run { try PostgresSession(target, database: "postgres") }
        let number = try await Offload.run { Int((try session.query("SHOW server_version_num").first?.first ?? nil) ?? "") ?? 0 }
        let tools = try await PostgresTools.find(serverMajor: number / 10000, commands: host.commands, system: host.system)
        let folder = "\(spec.directory.value)/globals"
        try makePrivateDirectory(spec.directory.value)
        try makePrivateDirectory(folder)
        let name = "globals-\(BackupStore.stamp(host.clock.now())).sql"
        let partial = "\(folder)/.partial-\(name)"
        try createPrivate(partial)
        try await withPassfile(target) { env in
            try await run(Command(tools.pgDumpall, ["--globals-only", "--no-password", "--file=\(hostPath(partial))",
                                                    "--dbname=\(Self.conninfo(target, database: "postgres"))"],
                                  environment: env, timeout: .seconds(600)), reason: "GlobalsFailed", what: "pg_dumpall --globals-only")
        }
        try host.files.move(partial, to: "\(folder)/\(name)", mode: 0o600)
        try store.rotateGlobals(keep: spec.keep)
    }

    // MARK: - Drill and restore

    /// Restores the newest dump of each database into a scratch database on the same server:
    /// checksum first, then `pg_restore`, then every table's row count against the manifest;
    /// the scratch database is dropped whatever happens.
    public func drill() async throws -> BackupState.Result {
        let lock = try BackupLock(files: host.files)
        defer { lock.release() }
        try removeStalePassfiles()
        var state = BackupState.load(host.files)
        let started = host.clock.now()
        state.lastDrillRun = started
        var failures: [(String, String)] = []
        var verified: [String] = []
        do {
            let target = try await self.target()
            for database in spec.databases.map(\.value) {
                do {
                    let newest = try await drillDump(database)
                    defer { offsite?.cleanUp() }
                    let scratch = Self.scratchName(database)
                    let counted: Result<[BackupManifest.Table], any Error>
                    do {
                        try await restore(newest, into: scratch, target: target, replace: true)
                        counted = .success(try await Offload.run { () throws -> [BackupManifest.Table] in
                            try Self.countRows(try PostgresSession(target, database: scratch))
                        })
                    } catch {
                        counted = .failure(error)
                    }
                    // The scratch database goes whatever happened (the session above is closed);
                    // one left behind is a copy of production data: the drill fails.
                    do {
                        try await dropDatabase(scratch, target: target)
                    } catch {
                        throw PostgresError(reason: "ScratchNotDropped", message: "\(database): the scratch database \(scratch) could not be dropped: \(error); drop it by hand")
                    }
                    try Self.compare(newest.manifest, try counted.get())
                    let origin = spec.restoreDrill?.from == .offsite ? ", from off-site" : ""
                    verified.append("\(database) (\(newest.manifest.file)\(origin), \(newest.manifest.tables.count) tables)")
                } catch {
                    let (reason, message) = Self.describe(error)
                    failures.append((reason, message))
                }
            }
        } catch {
            failures.append(Self.describe(error))
        }
        let duration = Double(host.clock.now().millisecondsSinceEpoch - started.millisecondsSinceEpoch) / 1000
        let result = failures.isEmpty
            ? BackupState.Result(at: started, ok: true, reason: "Verified", message: "restored and verified: \(verified.joined(separator: ", "))",
                                 durationSeconds: duration)
            : BackupState.Result(at: started, ok: false, reason: failures[0].0, message: failures.map(\.1).joined(separator: "; "),
                                 durationSeconds: duration)
        if !result.ok { state.failures["drill/\(result.reason)", default: 0] += 1 }
        state.drill = BackupState.merge(result, into: state.drill)
        try state.save(host.files)
        log("restore drill: \(result.ok ? "verified" : "FAILED (\(result.reason))"): \(result.message)")
        return result
    }

    /// The dump a drill restores: the newest on the node, or the newest off-site one (unpacked
    /// on the node first) when `restoreDrill.from` is `offsite`.
    func drillDump(_ database: String) async throws -> BackupStore.Entry {
        if spec.restoreDrill?.from == .offsite {
            guard let offsite else { throw PostgresError(reason: "NoOffsite", message: "restoreDrill.from is offsite, but backups.offsite is not declared") }
            do {
                return try await offsite.fetchDump(database, snapshot: nil).entry
            } catch let e as OffsiteError {
                throw PostgresError(reason: "Offsite\(e.reason)", message: "\(database): \(e.message)")
            }
        }
        guard let newest = try store.list(database).last else {
            throw PostgresError(reason: "NoBackup", message: "\(database): no complete dump to restore")
        }
        return newest
    }

    /// `backup restore --from offsite:DB[@SNAPSHOT]`: the dump of `database` in the newest (or
    /// the named) off-site snapshot, checksum-verified, into `target`.
    public func restoreFromOffsite(_ database: String, snapshot: String?, to target: String, replace: Bool) async throws -> String {
        guard let offsite else { throw PostgresError(reason: "NoOffsite", message: "the desired state declares no backups.offsite") }
        let lock = try BackupLock(files: host.files)
        defer { lock.release() }
        try removeStalePassfiles()
        defer { offsite.cleanUp() }
        let (entry, snap) = try await offsite.fetchDump(database, snapshot: snapshot)
        try await restore(entry, into: target, target: try await self.target(), replace: replace)
        RecoveryRecord.resolved(target, files: host.files)
        return "\(entry.manifest.file) from off-site snapshot \(snap.shortID) (\(snap.time.rfc3339))"
    }

    /// `backup restore`: the dump at `path` (checked against its manifest first) into
    /// `database`, which must not exist unless `replace`.
    public func restore(from path: String, to database: String, replace: Bool) async throws {
        let lock = try BackupLock(files: host.files)
        defer { lock.release() }
        try removeStalePassfiles()
        guard path.hasSuffix(".dump"), let bytes = try host.files.read(String(path.dropLast(".dump".count)) + ".json"),
              let manifest = BackupManifest(bytes) else {
            throw PostgresError(reason: "NoManifest", message: "\(path) has no manifest beside it (\(String(path.dropLast(".dump".count))).json): not a complete nodeagent dump")
        }
        try await restore(BackupStore.Entry(manifest: manifest, path: path), into: database, target: try await target(), replace: replace)
        RecoveryRecord.resolved(database, files: host.files)
    }

    /// - Parameter intoEmpty: the database exists and holds no table: restore into it as it is
    ///   (its owner and settings stay), instead of dropping and creating it.
    func restore(_ entry: BackupStore.Entry, into database: String, target: PostgresTarget, replace: Bool, intoEmpty: Bool = false) async throws {
        let actual = try await Offload.run { try host.files.sha256(entry.path) }
        guard let actual else { throw PostgresError(reason: "NoBackup", message: "\(entry.path) does not exist") }
        guard actual == entry.manifest.sha256 else {
            throw PostgresError(reason: "ChecksumMismatch",
                                message: "checksum mismatch: \(entry.path) has sha256 \(actual), its manifest says \(entry.manifest.sha256); not restored")
        }
        // The tools first: nothing is dropped unless the restore can run.
        let major = try await Offload.run { () throws -> Int in
            let admin = try PostgresSession(target, database: "postgres")
            return (Int((try admin.query("SHOW server_version_num").first?.first ?? nil) ?? "") ?? 0) / 10000
        }
        let tools = try await PostgresTools.find(serverMajor: major, commands: host.commands, system: host.system)
        try await Offload.run {
            let admin = try PostgresSession(target, database: "postgres")
            let exists = try !admin.query("SELECT 1 FROM pg_database WHERE datname = \(PostgresSession.literal(database))").isEmpty
            if exists, intoEmpty { return }
            if exists {
                guard replace else {
                    throw PostgresError(reason: "DatabaseExists", message: "database \(database) exists; pass --force to replace it")
                }
                try admin.query("DROP DATABASE \(PostgresSession.identifier(database))\(major >= 13 ? " WITH (FORCE)" : "")")
            }
            // template0: nothing someone added to template1 collides with the dump's objects.
            try admin.query("CREATE DATABASE \(PostgresSession.identifier(database)) TEMPLATE template0")
        }
        try await withPassfile(target) { env in
            // One transaction: a restore that fails half-way leaves no table behind (a retry
            // then finds the database empty, not someone else's data).
            try await run(Command(tools.pgRestore, ["--exit-on-error", "--single-transaction", "--no-password", "--dbname=\(Self.conninfo(target, database: database))",
                                                    hostPath(entry.path)],
                                  environment: env, timeout: .seconds(6 * 3600)), reason: "RestoreFailed", what: "pg_restore into \(database)")
        }
    }

    func dropDatabase(_ name: String, target: PostgresTarget) async throws {
        try await Offload.run {
            let admin = try PostgresSession(target, database: "postgres")
            let major = (Int((try admin.query("SHOW server_version_num").first?.first ?? nil) ?? "") ?? 0) / 10000
            try admin.query("DROP DATABASE IF EXISTS \(PostgresSession.identifier(name))\(major >= 13 ? " WITH (FORCE)" : "")")
        }
    }

    /// `nodeagent_drill_DB`, or a digest of the name when that would pass PostgreSQL's 63 bytes.
    static func scratchName(_ database: String) -> String {
        let name = "nodeagent_drill_\(database)"
        return name.utf8.count <= 63 ? name : "nodeagent_drill_" + Digest.sha256Hex(Array(database.utf8)).prefix(32)
    }

    /// A passfile a killed run left behind holds the password in clear: removed once the
    /// lock is ours (no other run can be using it).
    func removeStalePassfiles() throws {
        for name in try host.files.list(Self.stateDirectory) ?? [] where name.hasPrefix(".pgpass-") {
            try host.files.remove("\(Self.stateDirectory)/\(name)")
        }
    }

    // MARK: - Helpers

    static let tablesQuery = """
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
        ORDER BY 1, 2
        """

    /// Every table's exact row count, in the session's snapshot.
    static func countRows(_ session: PostgresSession) throws -> [BackupManifest.Table] {
        try session.query(tablesQuery).map { row in
            let schema = row[0] ?? "", name = row[1] ?? ""
            let count = try session.query("SELECT count(*) FROM \(PostgresSession.identifier(schema)).\(PostgresSession.identifier(name))")
            return BackupManifest.Table(schema: schema, name: name, rows: Int64(count.first?.first.flatMap { $0 } ?? "") ?? -1)
        }
    }

    static func compare(_ manifest: BackupManifest, _ counted: [BackupManifest.Table]) throws {
        let want = Dictionary(manifest.tables.map { ("\($0.schema).\($0.name)", $0.rows) }, uniquingKeysWith: { a, _ in a })
        let have = Dictionary(counted.map { ("\($0.schema).\($0.name)", $0.rows) }, uniquingKeysWith: { a, _ in a })
        var problems: [String] = []
        for (table, rows) in want.sorted(by: { $0.key < $1.key }) where have[table] != rows {
            problems.append(have[table].map { "\(table): \($0) rows, the manifest says \(rows)" } ?? "\(table): missing after restore")
        }
        for table in have.keys.sorted() where want[table] == nil { problems.append("\(table): not in the manifest") }
        guard problems.isEmpty else {
            throw PostgresError(reason: "RowCountMismatch", message: "\(manifest.database): restored data differs: \(problems.prefix(10).joined(separator: "; "))")
        }
    }

    /// A libpq connection string without the password (that goes through the passfile).
    static func conninfo(_ target: PostgresTarget, database: String) -> String {
        func q(_ v: String) -> String { "'" + v.replacingAll("\\", with: "\\\\").replacingAll("'", with: "\\'") + "'" }
        return "host=\(q(target.host)) port=\(target.port) user=\(q(target.user)) dbname=\(q(database)) sslmode=\(q(target.sslmode))"
    }

    /// Runs `body` with `PGPASSFILE` pointing at a 0600 file holding the password, removed after.
    func withPassfile(_ target: PostgresTarget, _ body: ([String: String?]) async throws -> Void) async throws {
        var env: [String: String?] = ["PGCONNECT_TIMEOUT": "10", "PGPASSWORD": nil]
        var file: String?
        if let password = target.password {
            func e(_ v: String) -> String { v.replacingAll("\\", with: "\\\\").replacingAll(":", with: "\\:") }
            let path = "\(Self.stateDirectory)/.pgpass-\(getpid())"
            try host.files.makeDirectory(Self.stateDirectory, mode: 0o700)
            try host.files.write(path, Array("\(e(target.host)):\(target.port):*:\(e(target.user)):\(e(password))\n".utf8), mode: 0o600)
            env["PGPASSFILE"] = hostPath(path)
            file = path
        }
        defer { if let file { try? host.files.remove(file) } }
        try await body(env)
    }

    func run(_ command: Command, reason: String, what: String) async throws {
        let r = try await host.commands.run(command)
        guard r.exitCode == 0 else {
            let detail = r.stderr.split(separator: "\n").suffix(3).joined(separator: " | ")
            throw PostgresError(reason: reason, message: "\(what) failed: \(detail.isEmpty || r.exitCode == nil ? r.ending : detail)")
        }
    }

    static func describe(_ error: any Error) -> (String, String) {
        switch error {
        case let e as PostgresError: return (e.reason, e.message)
        case let e as ReconcileError: return (e.reason, e.message)
        case let e as OffsiteError: return ("Offsite\(e.reason)", e.message)
        case let e as CommandError: return ("CommandFailed", "\(e)")
        case let e as FileSystemError: return ("FileError", "\(e)")
        default: return ("Error", "\(error)")
        }
    }

}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        split(separator: Character(target), omittingEmptySubsequences: false).joined(separator: replacement)
    }
}

/// The client tools of the server's major version (pg_dump cannot read a newer server):
/// `/usr/lib/postgresql/MAJOR/bin` (Debian's layout, with the PGDG packages for newer
/// majors), else the newest there, else `PATH` — checked with `--version`.
struct PostgresTools: Sendable {
    var pgDump: String
    var pgDumpall: String
    var pgRestore: String
    var version: String

    static func find(serverMajor: Int, commands: any CommandRunner, system: any FileSystem) async throws -> PostgresTools {
        let installed = ((try? system.list("/usr/lib/postgresql")) ?? nil ?? []).compactMap(Int.init).sorted()
        let major = installed.first { $0 == serverMajor } ?? installed.last { $0 >= serverMajor } ?? installed.last
        func path(_ tool: String) -> String { major.map { "/usr/lib/postgresql/\($0)/bin/\(tool)" } ?? tool }
        let pgDump = path("pg_dump")
        let out = try await commands.run(Command(pgDump, ["--version"], timeout: .seconds(20)))
        let version = out.stdout.split(separator: " ").first { $0.first?.isNumber == true }.map(String.init) ?? "?"
        let toolMajor = Int(version.split(separator: ".").first ?? "") ?? 0
        guard out.exitCode == 0, toolMajor >= serverMajor else {
            throw PostgresError(reason: "ToolsTooOld",
                                message: "the PostgreSQL server is version \(serverMajor) but pg_dump is \(out.exitCode == 0 ? version : "missing"): install postgresql-client-\(serverMajor) (PGDG apt repository)")
        }
        return PostgresTools(pgDump: pgDump, pgDumpall: path("pg_dumpall"), pgRestore: path("pg_restore"), version: version)
    }
}

/// One backup job at a time on this node (the daemon's scheduler and the CLI): an exclusive
/// `flock` on `/var/lib/nodeagent/backups/lock`, released on exit however it happens.
final class BackupLock: Sendable {
    let fd: Int32

    init(files: any FileSystem) throws {
        try files.makeDirectory(PostgresBackups.stateDirectory, mode: 0o700)
        let path = files.hostPath(PostgresBackups.stateDirectory) + "/lock"
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw FileSystemError(operation: "open", path: path, errno: errno) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw ReconcileError(.waiting, reason: "Busy", "another backup, drill or restore is running on this node")
        }
    }

    func release() {
        flock(fd, LOCK_UN)
        close(fd)
    }
}
