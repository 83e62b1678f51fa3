#if canImport(Glibc)
internal import Glibc
#endif
import YAML

/// Rebuilding a lost node from its off-site copy: `nodeagent recover --from-offsite`, or
/// `recover: offsite` in agent.yaml at the first pass of a replacement VPS. It restores the
/// secrets (the WireGuard key first of all), K3s's datastore and token, the applied revision,
/// the dumps and `paths` *before* the first pass brings up WireGuard and K3s; the databases
/// follow once their server answers (`restorePendingDatabases`). It never overwrites a node
/// that already has state unless forced.
public struct NodeRecovery: Sendable {
    public let offsite: OffsiteBackups
    var host: Host { offsite.host }

    public init(offsite: OffsiteBackups) { self.offsite = offsite }

    /// What says this node already has a life of its own: an applied revision, a K3s
    /// datastore, a WireGuard key.
    public func existingState() -> [String] {
        var paths = ["\(OffsiteBackups.appliedDirectory)/commit", K3sFiles.datastore]
        paths.append(offsite.platform.spec.wireguard?.privateKeyFile.value ?? "\(OffsiteBackups.secretsDirectory)/wg0.key")
        return paths.filter(offsite.exists)
    }

    /// Restores the newest (or the named) snapshot of this node that holds its secrets.
    /// - Returns: the record written (`nothing` when the repository holds no snapshot of this
    ///   node: its first life).
    /// - Throws: `OffsiteError` — `NodeHasState` (without `force`), `K3sRunning`,
    ///   `NoRepository` (no repository there: a typo or an unmounted disk must not give the
    ///   node a new identity; `nodeagent backup init` makes a new one), an unreachable
    ///   repository, a wrong key…. A recovery that stops half-way resumes from the same
    ///   snapshot at the next try (`RecoveryRecord.underWayPath`).
    public func recover(force: Bool, snapshot named: String? = nil, progress: @Sendable (String) -> Void) async throws -> RecoveryRecord {
        let lock = try BackupLock(files: host.files)
        defer { lock.release() }
        let resuming = RecoveryRecord.underWay(host.files).flatMap { $0.isEmpty ? nil : $0 }
        let existing = existingState()
        if resuming == nil, !existing.isEmpty, !force {
            throw OffsiteError("NodeHasState", "this node already has state (\(existing.joined(separator: ", "))): not overwritten; pass --force to replace it",
                               needsHuman: true)
        }
        if force, offsite.exists(K3sFiles.datastore), (try? await host.services.isActive(K3sFiles.unitName)) == true {
            throw OffsiteError("K3sRunning", "k3s.service is running: its datastore is not replaced under it (systemctl stop nodeagent k3s first)", needsHuman: true)
        }
        let started = host.clock.now()
        let snapshot: Restic.Snapshot
        do {
            // The snapshot a stopped recovery had chosen, else the newest that holds secrets.
            snapshot = try await offsite.pick(named ?? resuming, matching: Self.holdsIdentity, what: "the node's secrets or state")
        } catch let e as OffsiteError where named == nil && resuming == nil && e.reason == "NoSnapshot" {
            if let any = try await offsite.list().last {
                throw OffsiteError("NotInSnapshot", "the repository holds snapshots of node \(offsite.node) (the newest \(any.shortID)), but none with its "
                                   + "secrets or state: not taken for a first life; pick one with nodeagent recover --from-offsite --snapshot ID", needsHuman: true)
            }
            let record = RecoveryRecord(at: started, outcome: .nothing, snapshot: nil,
                                        steps: ["nothing to recover: \(e.message) — this is the node's first life"])
            progress(record.steps[0])
            try record.save(host.files)
            return record
        } catch let e as OffsiteError where e.reason == "NoRepository" {
            throw OffsiteError("NoRepository", "\(e.message); if this node is new and so is the repository, create it: nodeagent backup init", needsHuman: true)
        }
        try RecoveryRecord.markUnderWay(host.files, snapshot: snapshot.id)
        progress("recovering node \(offsite.node) from off-site snapshot \(snapshot.shortID) of \(snapshot.time.rfc3339)\(resuming != nil ? " (resumed)" : "")")
        let listed = try await offsite.unpack(snapshot, includes: [])
        guard listed.node == offsite.node else {
            throw OffsiteError("NotInSnapshot", "snapshot \(snapshot.shortID) is of node \(listed.node), not \(offsite.node)", needsHuman: true)
        }
        let contents = try await offsite.unpack(snapshot, includes: listed.items.filter { $0.holds != "paths" }.map(\.path))
        defer { offsite.cleanUp() }
        var steps: [String] = []
        func did(_ step: String) { steps.append(step); progress(step) }
        // The off-site credentials this node booted with are newer than the snapshot's.
        let own = Set(offsite.spec.secretFiles.map(\.file.value) + (offsite.spec.knownHostsFile.map { [$0.value] } ?? []))
        // The identity last: a recovery stopped half-way leaves no WireGuard key to mistake for
        // a node with a life of its own (and resumes anyway).
        let order = ["k3s", "state", "postgres", "paths", "secretFiles", "secrets"]
        let items = contents.items.sorted { (order.firstIndex(of: $0.holds) ?? 0) < (order.firstIndex(of: $1.holds) ?? 0) }
        for (holds, path) in items {
            let from = try offsite.unpacked(path)
            switch holds {
            case "secrets":
                let n = try copyTree(from, to: path, fileMode: 0o600, directoryMode: 0o700, keeping: own)
                did("secrets: \(n) files into \(path)")
            case "secretFiles":
                if own.contains(path), offsite.exists(path) { did("secret file: \(path) kept (this node's own off-site credential)"); continue }
                try host.files.makeDirectory(parent(path), mode: 0o700)
                try host.files.copy(from, to: path, mode: 0o600)
                did("secret file: \(path)")
            case "k3s" where path.hasSuffix("/k3s-state.db"):
                try host.files.makeDirectory(parent(K3sFiles.datastore), mode: 0o700)
                for suffix in ["-wal", "-shm"] { try host.files.remove(K3sFiles.datastore + suffix) }
                try host.files.copy(from, to: K3sFiles.datastore, mode: 0o600)
                did("k3s: datastore into \(K3sFiles.datastore)")
            case "k3s":
                try host.files.makeDirectory(parent(path), mode: 0o700)
                try host.files.copy(from, to: path, mode: 0o600)
                did("k3s: \(path == K3sFiles.token ? "server token" : "node password") into \(path)")
            case "state":
                let n = try copyTree(from, to: path, fileMode: 0o600, directoryMode: 0o700)
                did("state: \(path == OffsiteBackups.appliedDirectory ? "the applied revision" : "the backups' record") (\(n) files) into \(path)")
            case "postgres":
                // Into the directory the desired state names now (the dumps are the same).
                let target = offsite.platform.spec.backups?.postgres?.directory.value ?? path
                let n = try copyTree(from, to: target, fileMode: 0o600, directoryMode: 0o700)
                did("postgres: \(n) dump files into \(target)")
            case "paths":
                // In place by restic itself: owners, modes, links and times as they were.
                try await offsite.restic.run(["restore", snapshot.id, "--no-lock", "--target", host.files.hostPath("/"), "--include", "/" + (try offsite.tree(path))],
                                             doing: "restoring \(path)", timeout: .seconds(6 * 3600))
                did("paths: \(path) restored in place")
            default:
                did("\(holds): \(path) not restored (this nodeagent does not know what it is)")
            }
        }
        let declared = Set(offsite.platform.spec.backups?.postgres?.databases.map(\.value) ?? [])
        let pending = contents.databases.filter { declared.contains($0.key) }
        if !pending.isEmpty {
            did("databases \(pending.keys.sorted().joined(separator: ", ")): restored from these dumps once PostgreSQL answers")
        }
        for s in contents.skipped { did("not in the snapshot: \(s)") }
        var record = RecoveryRecord(at: started, outcome: .recovered, snapshot: snapshot.shortID, steps: steps, pendingDatabases: pending.keys.sorted())
        record.pendingDumps = pending
        try record.save(host.files)
        return record
    }

    /// The names in `path` when it is a directory; nil for a file.
    func directoryEntries(_ path: String) throws -> [String]? {
        do {
            return try host.files.list(path)
        } catch where error.errno == ENOTDIR {
            return nil
        }
    }

    /// A snapshot a node can come back from: it holds the secrets, or at least its state.
    static func holdsIdentity(_ s: Restic.Snapshot) -> Bool {
        s.tags.contains("holds:secrets") || s.tags.contains("holds:secretFiles") || s.tags.contains("holds:state")
    }

    func parent(_ path: String) -> String {
        let p = String(path[..<path.lastIndex(of: "/")!])
        return p.isEmpty ? "/" : p
    }

    /// Copies a file or a directory's files (atomically each), making directories as needed.
    /// - Returns: how many files.
    func copyTree(_ from: String, to target: String, fileMode: UInt32?, directoryMode: UInt32?, keeping: Set<String> = []) throws -> Int {
        if let names = try directoryEntries(from) {
            let mode = try directoryMode ?? (host.files.mode(from) ?? 0o755)
            try host.files.makeDirectory(target, mode: mode)
            var n = 0
            for name in names {
                n += try copyTree("\(from)/\(name)", to: "\(target)/\(name)", fileMode: fileMode, directoryMode: directoryMode, keeping: keeping)
            }
            return n
        }
        if keeping.contains(target), offsite.exists(target) { return 0 }
        try host.files.makeDirectory(parent(target), mode: directoryMode ?? 0o755)
        try host.files.copy(from, to: target, mode: try fileMode ?? (host.files.mode(from) ?? 0o600))
        return 1
    }
}

extension PostgresBackups {
    /// The databases a recovery left pending, restored from the newest local dump (which came
    /// back from off-site), checksum first, once the server answers. A database that already
    /// holds tables is left as it is and said: that is data nodeagent did not put there.
    /// - Returns: the record, updated (and saved) when something changed.
    public func restorePendingDatabases() async -> RecoveryRecord? {
        guard var record = RecoveryRecord.load(host.files), !record.pendingDatabases.isEmpty else { return nil }
        let target: PostgresTarget
        do {
            target = try await self.target()
            _ = try await Offload.run { try PostgresSession(target, database: "postgres") }
        } catch {
            let (_, message) = Self.describe(error)
            if record.databaseMessage != "waiting for PostgreSQL: \(message)" {
                record.databaseMessage = "waiting for PostgreSQL: \(message)"
                try? record.save(host.files)
            }
            return record
        }
        for database in record.pendingDatabases {
            do {
                let lock = try BackupLock(files: host.files)
                defer { lock.release() }
                // Read again under the lock: a restore by hand may have settled it meanwhile.
                if let now = RecoveryRecord.load(host.files) { record = now }
                guard record.pendingDatabases.contains(database) else { continue }
                let file = record.pendingDumps[database]
                guard let dump = try store.list(database).first(where: { file == nil || $0.manifest.file == file }) else {
                    throw PostgresError(reason: "NoBackup", message: "\(database): the recovered dump \(file ?? "") is not in \(spec.directory)")
                }
                let tables = try await Offload.run { () throws -> Int? in
                    let admin = try PostgresSession(target, database: "postgres")
                    guard try !admin.query("SELECT 1 FROM pg_database WHERE datname = \(PostgresSession.literal(database))").isEmpty else { return nil }
                    return try Self.countRows(try PostgresSession(target, database: database)).count
                }
                if let tables, tables > 0 {
                    // Not nodeagent's to overwrite: a person decides (the condition is Stalled).
                    record.unrestoredDatabases.append(database)
                    record.databaseMessage = "\(database) already holds \(tables) tables: not restored; nothing dumps it meanwhile; restore it by hand "
                        + "(nodeagent backup restore --from offsite:\(database)@\(record.snapshot ?? "SNAPSHOT") --to \(database) --force)"
                    log("recovery: \(record.databaseMessage!)")
                } else {
                    // An empty database the chart made keeps its owner: restored into, not replaced.
                    try await restore(dump, into: database, target: target, replace: false, intoEmpty: tables != nil)
                    record.restoredDatabases.append(database)
                    log("recovery: restored \(database) from \(dump.manifest.file) (\(dump.manifest.tables.count) tables)")
                }
                record.pendingDatabases.removeAll { $0 == database }
                if record.pendingDatabases.isEmpty, record.unrestoredDatabases.isEmpty { record.databaseMessage = nil }
                try? record.save(host.files)
            } catch {
                let (reason, message) = Self.describe(error)
                record.databaseMessage = "\(database): \(reason): \(message)"
                log("recovery: \(database) not restored yet: \(message)")
            }
        }
        try? record.save(host.files)
        return record
    }
}
