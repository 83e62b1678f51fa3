/// The `backups` section as the engine sees it: the dump directory exists (mode 0700), and
/// the condition says how the backups and drills are doing — a failed or overdue backup, or a
/// failed drill, is `Failed`. The jobs themselves run on their schedules in the daemon
/// (`BackupScheduler`) or on demand (`nodeagent backup …`).
public struct BackupsReconciler: Reconciler {
    public struct Desired: Sendable, Equatable {
        public var spec: PostgresBackup?
        public var offsite: OffsiteSpec?

        public init(spec: PostgresBackup?, offsite: OffsiteSpec?) { (self.spec, self.offsite) = (spec, offsite) }
    }

    public struct Observed: Sendable {
        var directoryExists: Bool
        var state: BackupState
        var offsite: OffsiteRecord
        var recovery: RecoveryRecord?
        var underWay: String?
        var now: Timestamp
    }

    public static let name = ReconcilerName.backups
    /// After helm (the in-cluster database), but it checks its own prerequisites.
    public static let dependencies: [ReconcilerName] = [.helm]
    public static let proceedsWhileDependenciesProgress = true
    public var owns: [OwnedResource] { [.file(BackupState.path), .file(OffsiteRecord.path)] }

    let host: Host

    public init(host: Host) {
        self.host = host
    }

    public func desired(from platform: Platform) -> Desired? {
        let backups = platform.spec.backups
        guard backups?.postgres != nil || backups?.offsite != nil else { return nil }
        return Desired(spec: backups?.postgres, offsite: backups?.offsite)
    }

    public func observe(_ desired: Desired) async throws -> Observed {
        Observed(directoryExists: try desired.spec.map { try host.files.mode($0.directory.value) != nil } ?? true, state: BackupState.load(host.files),
                 offsite: OffsiteRecord.load(host.files), recovery: RecoveryRecord.load(host.files),
                 underWay: RecoveryRecord.underWay(host.files), now: host.clock.now())
    }

    public func plan(_ desired: Desired, _ observed: Observed) throws -> [Change] {
        guard !observed.directoryExists, let spec = desired.spec else { return [] }
        return [Change(.create, "directory \(spec.directory)", detail: "(mode 0700, for the dumps)", operation: .makeDirectory(path: spec.directory.value, mode: 0o700))]
    }

    public func apply(_ changes: [Change], desired: Desired) async throws {
        for case .makeDirectory(let path, let mode) in changes.map(\.operation) { try host.files.makeDirectory(path, mode: mode) }
    }

    public func verify(_ desired: Desired) async throws -> Condition {
        Self.condition(desired, BackupState.load(host.files), OffsiteRecord.load(host.files), RecoveryRecord.load(host.files), now: host.clock.now(),
                       underWay: RecoveryRecord.underWay(host.files))
    }

    public func converged(_ desired: Desired, _ observed: Observed) -> Condition {
        Self.condition(desired, observed.state, observed.offsite, observed.recovery, now: observed.now, underWay: observed.underWay)
    }

    /// The dumps' condition, then the off-site copy's: a recovery still restoring databases
    /// is Progressing; a failed, overdue or unchecked copy is Failed (Stalled when a person
    /// must change a file: a wrong key, a refused login, a host key that changed).
    public static func condition(_ desired: Desired, _ state: BackupState, _ offsite: OffsiteRecord, _ recovery: RecoveryRecord?,
                                 now: Timestamp, underWay: String? = nil) -> Condition {
        var notes: [String] = []
        if let underWay, !underWay.isEmpty {
            // A recovery that chose its snapshot and stopped: no copy leaves the node until it ends.
            return Condition(.stalled, reason: "RecoveryUnfinished",
                             message: "a recovery from off-site snapshot \(underWay.prefix(8)) stopped half-way; no copy leaves the node until it ends: "
                                 + "run nodeagent recover --from-offsite again (it resumes from the same snapshot)")
        }
        if let spec = desired.spec {
            let c = condition(spec, state, now: now)
            guard c.status == .ready else { return c }
            if !c.message.isEmpty { notes.append(c.message) }
        }
        if let recovery, !recovery.unrestoredDatabases.isEmpty {
            return Condition(.stalled, reason: "RecoveryDatabaseNotRestored",
                             message: "recovered from off-site snapshot \(recovery.snapshot ?? "?"); \(recovery.databaseMessage ?? "databases \(recovery.unrestoredDatabases.joined(separator: ", ")) not restored")")
        }
        if let recovery, !recovery.pendingDatabases.isEmpty {
            return Condition(.progressing, reason: "RecoveringDatabases",
                             message: "recovered from off-site snapshot \(recovery.snapshot ?? "?"); databases \(recovery.pendingDatabases.joined(separator: ", ")) "
                                 + "not restored yet\(recovery.databaseMessage.map { ": \($0)" } ?? "")")
        }
        if let spec = desired.offsite {
            guard let copy = offsite.copy else {
                return Condition(.progressing, reason: "NoOffsiteCopyYet", message: "nothing copied off the node yet (the next backup run does)")
            }
            if !copy.ok {
                let good = copy.lastSuccess.map { "; last good copy at \($0.rfc3339)" } ?? "; no good copy yet"
                return Condition(copy.needsHuman ? .stalled : .failed,
                                 reason: "Offsite\(copy.reason)", message: "off-site copy: \(copy.message)\(good)")
            }
            let schedule = desired.spec?.schedule ?? spec.schedule ?? OffsiteSpec.defaultSchedule
            if let last = copy.lastSuccess, let due = schedule.next(after: last).flatMap({ schedule.next(after: $0) }),
               now > due.adding(TimeSpan(milliseconds: 3_600_000)) {
                return Condition(.failed, reason: "OffsiteOverdue", message: "the newest off-site copy is from \(last.rfc3339); the schedule \(schedule) wanted newer ones")
            }
            if let check = offsite.check, !check.ok {
                return Condition(.failed, reason: "OffsiteCheckFailed", message: "restic check at \(check.at.rfc3339): \(check.message)")
            }
            notes.append("off-site snapshot \(offsite.snapshot ?? "?") at \(copy.at.rfc3339)")
        }
        return .ready(notes.joined(separator: "; "))
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
