/// The `backups` section as the engine sees it: the dump directory exists (mode 0700), and
/// the condition says how the backups and drills are doing — a failed or overdue backup, or a
/// failed drill, is `Failed`. The jobs themselves run on their schedules in the daemon
/// (`BackupScheduler`) or on demand (`nodeagent backup …`).
public struct BackupsReconciler: Reconciler {
    public struct Desired: Sendable, Equatable {
        public var spec: PostgresBackup
    }

    public struct Observed: Sendable {
        var directoryExists: Bool
        var state: BackupState
        var now: Timestamp
    }

    public static let name = ReconcilerName.backups
    /// After helm (the in-cluster database), but it checks its own prerequisites.
    public static let dependencies: [ReconcilerName] = [.helm]
    public static let proceedsWhileDependenciesProgress = true
    public var owns: [OwnedResource] { [.file(BackupState.path)] }

    let host: Host

    public init(host: Host) {
        self.host = host
    }

    public func desired(from platform: Platform) -> Desired? {
        platform.spec.backups?.postgres.map { Desired(spec: $0) }
    }

    public func observe(_ desired: Desired) async throws -> Observed {
        Observed(directoryExists: try host.files.mode(desired.spec.directory.value) != nil, state: BackupState.load(host.files),
                 now: host.clock.now())
    }

    public func plan(_ desired: Desired, _ observed: Observed) throws -> [Change] {
        guard !observed.directoryExists else { return [] }
        return [Change(.create, "directory \(desired.spec.directory)", detail: "(mode 0700, for the dumps)", operation: .makeDirectory(path: desired.spec.directory.value, mode: 0o700))]
    }

    public func apply(_ changes: [Change], desired: Desired) async throws {
        for case .makeDirectory(let path, let mode) in changes.map(\.operation) { try host.files.makeDirectory(path, mode: mode) }
    }

    public func verify(_ desired: Desired) async throws -> Condition {
        Self.condition(desired.spec, BackupState.load(host.files), now: host.clock.now())
    }

    public func converged(_ desired: Desired, _ observed: Observed) -> Condition {
        Self.condition(desired.spec, observed.state, now: observed.now)
    }

    /// Failed when a database's last backup failed, when a scheduled run was missed by more
    /// than one period, or when the last drill failed; Progressing before the first backup.
    public static func condition(_ spec: PostgresBackup, _ state: BackupState, now: Timestamp) -> Condition {
        var notes: [String] = []
        for database in spec.databases.map(\.value) {
            guard let r = state.databases[database] else {
                let next = spec.schedule.next(after: now).map { " (next run \($0.rfc3339))" } ?? ""
                return Condition(.progressing, reason: "NoBackupYet", message: "\(database): no backup yet\(next)")
            }
            if !r.ok {
                let good = r.lastSuccess.map { "; last good dump at \($0.rfc3339)" } ?? "; no good dump yet"
                return Condition(.failed, reason: "BackupFailed", message: "\(database): \(r.reason): \(r.message)\(good)")
            }
            if let due = spec.schedule.next(after: r.at).flatMap({ spec.schedule.next(after: $0) }), now > due.adding(TimeSpan(milliseconds: 3_600_000)) {
                return Condition(.failed, reason: "BackupOverdue", message: "\(database): the last backup is from \(r.at.rfc3339); the schedule \(spec.schedule) wanted newer ones")
            }
            notes.append("\(database): \(r.sizeBytes) bytes at \(r.at.rfc3339)")
        }
        if let drill = state.drill, spec.restoreDrill?.enabled ?? false {
            if !drill.ok { return Condition(.failed, reason: "DrillFailed", message: "restore drill at \(drill.at.rfc3339): \(drill.reason): \(drill.message)") }
            notes.append("drill verified at \(drill.at.rfc3339)")
        }
        return .ready(notes.joined(separator: "; "))
    }
}
