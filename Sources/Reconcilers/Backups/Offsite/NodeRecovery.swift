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
        var paths = ["\(OffsiteBackups.appliedDirectory)/commit", OffsiteBackups.k3sDatabase]
        paths.append(offsite.platform.spec.wireguard?.privateKeyFile.value ?? "\(OffsiteBackups.secretsDirectory)/wg0.key")
        return paths.filter(offsite.exists)
    }

    /// Restores the newest (or the named) snapshot of this node.
    /// - Returns: the record written (`nothing` when the repository holds no snapshot of this
    ///   node or does not exist yet: a first boot).
    /// - Throws: `OffsiteError` — `NodeHasState` (without `force`), an unreachable
    ///   repository, a wrong key…: nothing was put in place.
    public func recover(force: Bool, snapshot named: String? = nil, progress: @Sendable (String) -> Void) async throws -> RecoveryRecord {
        let lock = try BackupLock(files: host.files)
        defer { lock.release() }
        let existing = existingState()
        if !existing.isEmpty, !force {
            throw OffsiteError("NodeHasState", "this node already has state (\(existing.joined(separator: ", "))): not overwritten; pass --force to replace it",
                               needsHuman: true)
        }
        let started = host.clock.now()
        let snapshot: Restic.Snapshot
        do {
            snapshot = try await offsite.pick(named, matching: { _ in true }, what: "anything")
        } catch let e as OffsiteError where named == nil && (e.reason == "NoSnapshot" || e.reason == "NoRepository") {
            let record = RecoveryRecord(at: started, outcome: .nothing, snapshot: nil,
                                        steps: ["nothing to recover: \(e.message) — this is the node's first life"])
            progress(record.steps[0])
            try record.save(host.files)
            return record
        }
        progress("recovering node \(offsite.node) from off-site snapshot \(snapshot.shortID) of \(snapshot.time.rfc3339)")
        let contents = try await offsite.unpack(snapshot, includes: nil)
        defer { offsite.cleanUp() }
        guard contents.node == offsite.node else {
            throw OffsiteError("NotInSnapshot", "snapshot \(snapshot.shortID) is of node \(contents.node), not \(offsite.node)", needsHuman: true)
        }
        var steps: [String] = []
        func did(_ step: String) { steps.append(step); progress(step) }
        for (holds, path) in contents.items {
            let from = try offsite.unpacked(path)
            switch holds {
            case "secrets":
                let n = try copyTree(from, to: path, fileMode: 0o600, directoryMode: 0o700)
                did("secrets: \(n) files into \(path)")
            case "secretFiles":
                try host.files.makeDirectory(parent(path), mode: 0o700)
                try host.files.copy(from, to: path, mode: 0o600)
                did("secret file: \(path)")
            case "k3s" where path.hasSuffix("/k3s-state.db"):
                try host.files.makeDirectory(parent(OffsiteBackups.k3sDatabase), mode: 0o700)
                for suffix in ["-wal", "-shm"] { try host.files.remove(OffsiteBackups.k3sDatabase + suffix) }
                try host.files.copy(from, to: OffsiteBackups.k3sDatabase, mode: 0o600)
                did("k3s: datastore into \(OffsiteBackups.k3sDatabase)")
            case "k3s":
                try host.files.makeDirectory(parent(path), mode: 0o700)
                try host.files.copy(from, to: path, mode: 0o600)
                did("k3s: server token into \(path)")
            case "state":
                let n = try copyTree(from, to: path, fileMode: 0o600, directoryMode: 0o700)
                did("state: the applied revision (\(n) files) into \(path)")
            case "postgres":
                // Into the directory the desired state names now (the dumps are the same).
                let target = offsite.platform.spec.backups?.postgres?.directory.value ?? path
                let n = try copyTree(from, to: target, fileMode: 0o600, directoryMode: 0o700)
                did("postgres: \(n) dump files into \(target)")
            case "paths":
                let n = try copyTree(from, to: path, fileMode: nil, directoryMode: nil)
                did("paths: \(n) files into \(path)")
            default:
                did("\(holds): \(path) not restored (this nodeagent does not know what it is)")
            }
        }
        let declared = Set(offsite.platform.spec.backups?.postgres?.databases.map(\.value) ?? [])
        let pending = contents.databases.keys.filter(declared.contains).sorted()
        if !pending.isEmpty { did("databases \(pending.joined(separator: ", ")): restored from their dumps once PostgreSQL answers") }
        for s in contents.skipped { did("not in the snapshot: \(s)") }
        let record = RecoveryRecord(at: started, outcome: .recovered, snapshot: snapshot.shortID, steps: steps, pendingDatabases: pending)
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

    func parent(_ path: String) -> String {
        let p = String(path[..<path.lastIndex(of: "/")!])
        return p.isEmpty ? "/" : p
    }

    /// Copies a file or a directory's files (atomically each), making directories as needed.
    /// - Returns: how many files.
    func copyTree(_ from: String, to target: String, fileMode: UInt32?, directoryMode: UInt32?) throws -> Int {
        if let names = try directoryEntries(from) {
            let mode = try directoryMode ?? (host.files.mode(from) ?? 0o755)
            try host.files.makeDirectory(target, mode: mode)
            var n = 0
            for name in names { n += try copyTree("\(from)/\(name)", to: "\(target)/\(name)", fileMode: fileMode, directoryMode: directoryMode) }
            return n
        }
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
                guard let newest = try store.list(database).last else {
                    throw PostgresError(reason: "NoBackup", message: "\(database): no dump came back")
                }
                let tables = try await Offload.run { () throws -> Int in
                    let admin = try PostgresSession(target, database: "postgres")
                    guard try !admin.query("SELECT 1 FROM pg_database WHERE datname = \(PostgresSession.literal(database))").isEmpty else { return 0 }
                    return try Self.countRows(try PostgresSession(target, database: database)).count
                }
                if tables > 0 {
                    record.databaseMessage = "\(database) already holds \(tables) tables: left as it is (restore by hand: nodeagent backup restore --from \(newest.path) --to \(database) --force)"
                    log("recovery: \(record.databaseMessage!)")
                } else {
                    try await restore(newest, into: database, target: target, replace: true)
                    record.restoredDatabases.append(database)
                    record.databaseMessage = nil
                    log("recovery: restored \(database) from \(newest.manifest.file) (\(newest.manifest.tables.count) tables)")
                }
                record.pendingDatabases.removeAll { $0 == database }
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
