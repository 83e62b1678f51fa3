import YAML

/// The off-site copy of `spec.backups.offsite`: after every backup run, one restic snapshot of
/// everything the node could not rebuild from Git — the sealed dumps with their manifests and
/// the roles, the secrets directory (and every other secret file the desired state names), K3s's
/// datastore taken consistently with its server token, the applied revision, and `paths`;
/// tagged `nodeagent`, `node:NAME`, `holds:WHAT` and `db:DATABASE`, with restic's host set to
/// the node's name. Also the repository's retention, prune and check, and the restores from it.
public struct OffsiteBackups: Sendable {
    public let spec: OffsiteSpec
    public let platform: Platform
    let host: Host
    let log: @Sendable (String) -> Void
    public var restic: Restic { Restic(spec: spec, host: host) }
    public var node: String { platform.name.value }

    /// Where a run stages what is not a plain file (the datastore's copy, `contents.json`).
    static let stage = "/var/lib/nodeagent/offsite/stage"
    /// Where restores unpack a snapshot before anything is put in place.
    static let unpack = "/var/lib/nodeagent/offsite/restore"
    static let contentsName = "contents.json"
    static let secretsDirectory = "/etc/nodeagent/secrets"
    static let appliedDirectory = "/var/lib/nodeagent/applied"

    public init(spec: OffsiteSpec, platform: Platform, host: Host, log: @escaping @Sendable (String) -> Void = { _ in }) {
        (self.spec, self.platform, self.host, self.log) = (spec, platform, host, log)
    }

    public init?(platform: Platform, host: Host, log: @escaping @Sendable (String) -> Void = { _ in }) {
        guard let spec = platform.spec.backups?.offsite else { return nil }
        self.init(spec: spec, platform: platform, host: host, log: log)
    }

    /// A node path as it sits in a snapshot: relative to the node's root (restic runs there),
    /// so `/etc/nodeagent/secrets` is `etc/nodeagent/secrets` whatever `--root` is.
    func tree(_ path: String) throws -> String {
        let full = host.files.hostPath(path), root = host.files.hostPath("/")
        let base = root.hasSuffix("/") ? root : root + "/"
        guard full.hasPrefix(base) else {
            throw OffsiteError("ResticFailed", "\(path) is outside the node's root \(root) (stateDirectory moved out of it)", needsHuman: true)
        }
        return String(full.dropFirst(base.count))
    }

    func exists(_ path: String) -> Bool { ((try? host.files.mode(path)) ?? nil) != nil }

    // MARK: - The copy

    /// What one snapshot holds, written into it as `contents.json` (restores read it first).
    struct Contents: Equatable {
        var node: String
        var takenAt: Timestamp
        /// `holds` → node paths: secrets, secretFiles, postgres, k3s, state, paths.
        var items: [(holds: String, path: String)]
        /// The newest complete dump of each database, by file name.
        var databases: [String: String]
        var postgresDirectory: String?
        var skipped: [String]

        static func == (a: Contents, b: Contents) -> Bool { a.json == b.json }

        var json: JSONValue {
            .object([
                .init("node", .string(node)), .init("takenAt", .string(takenAt.rfc3339)),
                .init("items", .array(items.map { .object(["holds": .string($0.holds), "path": .string($0.path)]) })),
                .init("databases", .object(databases.sorted { $0.key < $1.key }.map { .init($0.key, .string($0.value)) })),
                .init("postgresDirectory", postgresDirectory.map(JSONValue.string) ?? .null),
                .init("skipped", .array(skipped.map(JSONValue.string))),
            ])
        }

        init(node: String, takenAt: Timestamp, items: [(holds: String, path: String)], databases: [String: String], postgresDirectory: String?,
             skipped: [String]) {
            (self.node, self.takenAt, self.items, self.databases, self.postgresDirectory, self.skipped) =
                (node, takenAt, items, databases, postgresDirectory, skipped)
        }

        init?(_ bytes: [UInt8]) {
            guard let j = JSONValue.parse(bytes), let node = j["node"]?.string, let at = j["takenAt"]?.string.flatMap(Timestamp.init(rfc3339:)) else {
                return nil
            }
            var databases: [String: String] = [:]
            if case .object(let members)? = j["databases"] { for m in members { databases[m.key] = m.value.string } }
            self.init(node: node, takenAt: at,
                      items: (j["items"]?.array ?? []).compactMap { i in i["holds"]?.string.flatMap { h in i["path"]?.string.map { (h, $0) } } },
                      databases: databases, postgresDirectory: j["postgresDirectory"]?.string,
                      skipped: (j["skipped"]?.array ?? []).compactMap(\.string))
        }
    }

    /// Copies everything off the node now (under the backup lock) and records the outcome.
    /// - Returns: the record written.
    @discardableResult
    public func copy() async -> OffsiteRecord {
        let started = host.clock.now()
        if RecoveryRecord.underWay(host.files) != nil {
            // A blank or half-recovered node must not become the newest snapshot.
            var record = OffsiteRecord.load(host.files)
            record.notRun = "RecoveryUnderWay: a recovery from the off-site copy is under way on this node; nothing is copied until it is done"
            log("off-site copy not run: \(record.notRun!)")
            return record
        }
        do {
            let lock: BackupLock
            do {
                lock = try BackupLock(files: host.files)
            } catch let error as ReconcileError where error.reason == "Busy" {
                // Not a failure of the copy: the scheduler tries again within a minute.
                var record = OffsiteRecord.load(host.files)
                record.notRun = "Busy: \(error.message)"
                return record
            }
            defer { lock.release() }
            return try await copyLocked(started: started)
        } catch {
            let e = Self.offsiteError(error)
            log("off-site copy failed (\(e.reason)): \(e.message)")
            var record = OffsiteRecord.load(host.files)
            record.copy = OffsiteRecord.Step(at: started, ok: false, reason: e.reason, message: e.message, lastSuccess: record.copy?.lastSuccess,
                                             needsHuman: e.needsHuman)
            try? record.save(host.files)
            return record
        }
    }

    public static func offsiteError(_ error: any Error) -> OffsiteError {
        switch error {
        case let e as OffsiteError: return e
        case let e as ReconcileError: return OffsiteError(e.reason, e.message, needsHuman: e.kind == .stalled)
        case let e as PostgresError: return OffsiteError(e.reason, e.message)
        default: return OffsiteError("Error", "\(error)")
        }
    }

    func copyLocked(started: Timestamp) async throws -> OffsiteRecord {
        try host.files.removeTree(Self.stage)
        try host.files.makeDirectory("/var/lib/nodeagent/offsite", mode: 0o700)
        try host.files.makeDirectory(Self.stage, mode: 0o700)
        defer { try? host.files.removeTree(Self.stage) }
        var items: [(holds: String, path: String)] = []
        var skipped: [String] = []
        var databases: [String: String] = [:]
        // The secrets: the directory, and every secret file the desired state names elsewhere.
        if exists(Self.secretsDirectory) {
            items.append(("secrets", Self.secretsDirectory))
        } else {
            skipped.append("secrets: \(Self.secretsDirectory) does not exist")
        }
        for file in Set(platform.secretFiles.map(\.file.value)).sorted() where !file.hasPrefix(Self.secretsDirectory + "/") && exists(file) {
            items.append(("secretFiles", file))
        }
        // The dumps, their manifests and the roles.
        var postgresDirectory: String?
        if let pg = platform.spec.backups?.postgres {
            let store = BackupStore(directory: pg.directory.value, files: host.files)
            for db in pg.databases.map(\.value) {
                if let newest = try store.list(db).last { databases[db] = newest.manifest.file } else { skipped.append("postgres: \(db) has no complete dump yet") }
            }
            if exists(pg.directory.value), !databases.isEmpty {
                items.append(("postgres", pg.directory.value))
                postgresDirectory = pg.directory.value
            }
        } else {
            skipped.append("postgres: the desired state declares no backups.postgres")
        }
        // K3s's datastore, taken consistently, and its token.
        if exists(K3sFiles.datastore) {
            do {
                try await snapshotDatastore(into: "\(Self.stage)/k3s-state.db")
                items.append(("k3s", "\(Self.stage)/k3s-state.db"))
                if exists(K3sFiles.token) { items.append(("k3s", K3sFiles.token)) } else { skipped.append("k3s: no server token at \(K3sFiles.token)") }
                if exists(K3sFiles.nodePassword) { items.append(("k3s", K3sFiles.nodePassword)) }
            } catch let error as OffsiteError {
                // The dumps and the secrets still leave the node; the record says what did not.
                skipped.append("k3s: FAILED (\(error.reason)): \(error.message)")
            }
        } else if exists(K3sFiles.etcd) {
            skipped.append("k3s: an embedded etcd datastore is not copied (only SQLite's state.db); use k3s etcd-snapshot")
        } else {
            skipped.append("k3s: no K3s datastore on this node (\(K3sFiles.datastore))")
        }
        // nodeagent's own state: the applied revision.
        if exists("\(Self.appliedDirectory)/commit") {
            items.append(("state", Self.appliedDirectory))
        } else {
            skipped.append("state: no applied revision yet")
        }
        // The backups' own record: a recovered node knows when its databases were last dumped.
        if exists(BackupState.path) { items.append(("state", BackupState.path)) }
        for path in spec.paths.map(\.value) {
            if exists(path) { items.append(("paths", path)) } else { skipped.append("paths: \(path) does not exist") }
        }
        let contents = Contents(node: node, takenAt: started, items: items, databases: databases, postgresDirectory: postgresDirectory, skipped: skipped)
        try host.files.write("\(Self.stage)/\(Self.contentsName)", Array((contents.json.jsonText + "\n").utf8), mode: 0o600)
        try await ensureRepository()
        let holds = Array(Set(items.map(\.holds))).sorted()
        let tags = ["nodeagent", "node:\(node)"] + holds.map { "holds:\($0)" } + databases.keys.sorted().map { "db:\($0)" }
        var paths = [try tree(Self.stage)]
        for item in items where !item.path.hasPrefix(Self.stage + "/") { paths.append(try tree(item.path)) }
        let result = try await restic.run(["backup", "--json", "--quiet", "--host", node, "--tag", tags.joined(separator: ","),
                                           "--exclude", ".partial-*", "--exclude", ".pgpass-*"] + paths,
                                          doing: "copying off the node", timeout: .seconds(6 * 3600), workingDirectory: host.files.hostPath("/"))
        let summary = result.stdout.split(whereSeparator: \.isNewline).reversed().lazy
            .compactMap { JSONValue.parse(Array($0.utf8)) }.first { $0["message_type"]?.string == "summary" }
        guard let summary, let id = summary["snapshot_id"]?.string else {
            throw OffsiteError("ResticFailed", "copying off the node: restic reported no snapshot")
        }
        let added = summary["data_added"]?.int.map(Int64.init), processed = summary["total_bytes_processed"]?.int.map(Int64.init)
        var message = "snapshot \(id.prefix(8)) holds \(holds.joined(separator: ", "))"
        if let added { message += "; \(added) bytes added" }
        // Retention: forget what `keep` does not keep (the data goes at the next prune).
        var retention: String?
        do {
            try await restic.run(["unlock"], doing: "removing stale locks", timeout: .seconds(300))
            var policy: [String] = []
            for (flag, n) in [("--keep-last", spec.keep.last), ("--keep-daily", spec.keep.daily), ("--keep-weekly", spec.keep.weekly),
                              ("--keep-monthly", spec.keep.monthly)] where n > 0 { policy += [flag, String(n)] }
            try await restic.run(["forget", "--host", node, "--tag", "nodeagent", "--group-by", "host"] + policy,
                                 doing: "forgetting old snapshots", timeout: .seconds(1800))
        } catch {
            retention = Self.offsiteError(error).message
            message += "; retention not applied: \(retention!)"
        }
        log("off-site: \(message)\(skipped.isEmpty ? "" : "; skipped: \(skipped.joined(separator: "; "))")")
        var record = OffsiteRecord.load(host.files)
        record.copy = OffsiteRecord.Step(at: started, ok: true, reason: "Succeeded", message: message, lastSuccess: host.clock.now())
        record.snapshot = String(id.prefix(8))
        record.holds = holds
        record.skipped = skipped
        record.addedBytes = added
        record.processedBytes = processed
        try record.save(host.files)
        return record
    }

    /// A consistent copy of K3s's datastore while K3s writes: SQLite's `VACUUM INTO` from a
    /// read-only connection (one read transaction; the copy is compact and in rollback-journal
    /// mode, so no `-wal`/`-shm` beside it), then `PRAGMA integrity_check` on the copy opened
    /// immutable (it leaves nothing behind either).
    func snapshotDatastore(into path: String) async throws {
        let copy = host.files.hostPath(path)
        do {
            try await host.commands.check(Command("sqlite3", ["-readonly", "-cmd", ".timeout 30000", host.files.hostPath(K3sFiles.datastore),
                                                              "VACUUM INTO '\(copy)'"], timeout: .seconds(1800)))
            let check = try await host.commands.check(Command("sqlite3", ["file:\(copy)?immutable=1", "PRAGMA integrity_check;"], timeout: .seconds(1800)))
            guard check.stdout.split(whereSeparator: \.isNewline).first == "ok" else {
                throw OffsiteError("DatastoreCopyCorrupt", "the copy of K3s's datastore fails SQLite's integrity check: \(check.stdout.prefix(200))")
            }
            try host.files.restrict(path, to: 0o600)
        } catch let error as CommandError {
            throw OffsiteError("DatastoreCopyFailed", "copying K3s's datastore (sqlite3 VACUUM INTO from \(K3sFiles.datastore)): \(error)")
        }
    }

    /// Initializes the repository at the node's first copy; a repository that held this
    /// node's copies and is gone (an unmounted disk, a moved directory) is not silently made
    /// anew: the copy fails with `NoRepository`.
    func ensureRepository() async throws {
        do {
            try await restic.run(["cat", "config", "--no-lock"], doing: "opening the off-site repository", timeout: .seconds(300))
        } catch let error as OffsiteError where error.reason == "NoRepository" {
            if let last = OffsiteRecord.load(host.files).copy?.lastSuccess {
                throw OffsiteError("NoRepository", "the off-site repository that took this node's copies until \(last.rfc3339) is not there any more "
                                   + "(an unmounted disk, a moved directory?): not created again; if it really is a new one, run nodeagent backup init",
                                   needsHuman: true)
            }
            try await initialize()
        }
    }

    /// `restic init`: a new, empty repository (`nodeagent backup init`, and the first copy).
    public func initialize() async throws {
        try await restic.run(["init"], doing: "creating the off-site repository", timeout: .seconds(300))
        log("off-site: created the restic repository \(GitURL.redacted(spec.repository))")
    }

    // MARK: - Check and prune

    /// `restic check` (with `--read-data-subset` when set): structure, and the data read back.
    @discardableResult
    public func check() async -> OffsiteRecord {
        await step(doing: "checking the off-site repository") {
            try await restic.run(["unlock"], doing: "removing stale locks", timeout: .seconds(300))
            try await restic.run(["check"] + (spec.check.readDataSubset.map { ["--read-data-subset", $0] } ?? []),
                                 doing: "checking the off-site repository", timeout: .seconds(6 * 3600))
            return "the repository is sound" + (spec.check.readDataSubset.map { " (\($0) of the data read back)" } ?? " (structure)")
        } record: { r, s in r.check = s } previous: { $0.check }
    }

    /// `restic prune`: removes the data no snapshot needs any more.
    @discardableResult
    public func prune() async -> OffsiteRecord {
        await step(doing: "pruning the off-site repository") {
            try await restic.run(["unlock"], doing: "removing stale locks", timeout: .seconds(300))
            try await restic.run(["prune"], doing: "pruning the off-site repository", timeout: .seconds(6 * 3600))
            return "pruned"
        } record: { r, s in r.prune = s } previous: { $0.prune }
    }

    func step(doing what: String, _ body: () async throws -> String, record: (inout OffsiteRecord, OffsiteRecord.Step) -> Void,
              previous: (OffsiteRecord) -> OffsiteRecord.Step?) async -> OffsiteRecord {
        let started = host.clock.now()
        var step: OffsiteRecord.Step
        do {
            let lock = try BackupLock(files: host.files)
            defer { lock.release() }
            let message = try await body()
            step = OffsiteRecord.Step(at: started, ok: true, reason: "Succeeded", message: message, lastSuccess: host.clock.now())
        } catch {
            var e = Self.offsiteError(error)
            if what.hasPrefix("checking") {
                // Only restic's verdict on the data says the repository is damaged; a check
                // that could not run (unreachable, wrong key, busy) says nothing about it.
                guard e.reason == "ResticFailed" else {
                    var r = OffsiteRecord.load(host.files)
                    r.notRun = "\(e.reason): \(e.message)"
                    log("off-site: \(what): not run (\(e.reason)): \(e.message)")
                    return r
                }
                e.reason = "CheckFailed"
            }
            if e.reason == "Busy" {
                var r = OffsiteRecord.load(host.files)
                r.notRun = "Busy: \(e.message)"
                return r
            }
            step = OffsiteRecord.Step(at: started, ok: false, reason: e.reason, message: e.message,
                                      lastSuccess: previous(OffsiteRecord.load(host.files))?.lastSuccess, needsHuman: e.needsHuman)
        }
        log("off-site: \(what): \(step.ok ? "ok" : "FAILED (\(step.reason))"): \(step.message)")
        var r = OffsiteRecord.load(host.files)
        record(&r, step)
        try? r.save(host.files)
        return r
    }

    // MARK: - Reading the repository

    /// The snapshot to restore: the one named (an id or its prefix), else the newest that
    /// satisfies `matching`.
    func pick(_ named: String?, matching: (Restic.Snapshot) -> Bool, what: String) async throws -> Restic.Snapshot {
        let snapshots = try await restic.snapshots(node: node)
        if let named {
            guard let s = snapshots.first(where: { $0.id.hasPrefix(named.lowercased()) }) else {
                throw OffsiteError("NoSnapshot", "no off-site snapshot \(named) of node \(node)")
            }
            guard matching(s) else { throw OffsiteError("NotInSnapshot", "snapshot \(s.shortID) does not hold \(what)") }
            return s
        }
        guard let s = snapshots.last(where: matching) else {
            throw OffsiteError("NoSnapshot", "the off-site repository holds no snapshot of node \(node) with \(what)")
        }
        return s
    }

    /// Unpacks `includes` (node paths) of a snapshot under `unpack` and returns its contents.
    func unpack(_ snapshot: Restic.Snapshot, includes: [String]?) async throws -> Contents {
        try host.files.removeTree(Self.unpack)
        try host.files.makeDirectory("/var/lib/nodeagent/offsite", mode: 0o700)
        try host.files.makeDirectory(Self.unpack, mode: 0o700)
        let stageTree = try tree(Self.stage)
        // --no-lock: a stale lock the lost node left must not hold its replacement.
        var args = ["restore", snapshot.id, "--no-lock", "--target", host.files.hostPath(Self.unpack)]
        if let includes {
            args += ["--include", "/\(stageTree)/\(Self.contentsName)"]
            for path in includes { args += ["--include", "/" + (try tree(path))] }
        }
        try await restic.run(args, doing: "restoring snapshot \(snapshot.shortID)", timeout: .seconds(6 * 3600))
        guard let bytes = try host.files.read("\(Self.unpack)/\(stageTree)/\(Self.contentsName)"), let contents = Contents(bytes) else {
            throw OffsiteError("NotInSnapshot", "snapshot \(snapshot.shortID) has no \(Self.contentsName): not a nodeagent snapshot")
        }
        return contents
    }

    /// Where a node path of the snapshot is once unpacked.
    func unpacked(_ path: String) throws -> String { "\(Self.unpack)/\(try tree(path))" }

    /// The dump of `database` in the newest (or the named) off-site snapshot, unpacked on the
    /// node with its manifest: restores check its checksum like a local dump's.
    public func fetchDump(_ database: String, snapshot named: String?) async throws -> (entry: BackupStore.Entry, snapshot: Restic.Snapshot) {
        let snapshot = try await pick(named, matching: { $0.tagged("db").contains(database) }, what: "a dump of \(database)")
        // contents.json names the dump directory the snapshot was taken with.
        let contents = try await unpack(snapshot, includes: [])
        guard let directory = contents.postgresDirectory, let file = contents.databases[database] else {
            throw OffsiteError("NotInSnapshot", "snapshot \(snapshot.shortID) holds no dump of \(database)")
        }
        let base = String(file.dropLast(".dump".count))
        _ = try await unpack(snapshot, includes: ["\(directory)/\(database)/\(file)", "\(directory)/\(database)/\(base).json"])
        let store = BackupStore(directory: try unpacked(directory), files: host.files)
        guard let entry = try store.list(database).first(where: { $0.manifest.file == file }) else {
            throw OffsiteError("NotInSnapshot", "snapshot \(snapshot.shortID): \(file) or its manifest did not come back")
        }
        return (entry, snapshot)
    }

    /// Removes what a restore unpacked.
    public func cleanUp() { try? host.files.removeTree(Self.unpack) }

    /// `backup list --offsite`: the node's snapshots with what each holds.
    public func list() async throws -> [Restic.Snapshot] { try await restic.snapshots(node: node) }
}
