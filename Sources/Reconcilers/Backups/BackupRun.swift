public import KubeClient

/// One backup run, scheduled or on demand: the dumps of `spec.backups.postgres` (if declared),
/// then the off-site copy of `spec.backups.offsite` (if declared) — whatever the dumps did, so
/// the secrets and the datastore still leave the node when a database is down.
public struct BackupRun: Sendable {
    public var databases: [String: BackupState.Result] = [:]
    public var offsite: OffsiteRecord?
    /// Why the dumps did not run at all (another job held the lock, the state file could not
    /// be written…), as `REASON: message`.
    public var dumpsNotRun: String?
    /// The off-site copy did not run (another job held the lock, a recovery is under way).
    public var copyNotRun: String?

    public var ok: Bool { databases.values.allSatisfy(\.ok) && (offsite?.copy?.ok ?? true) && dumpsNotRun == nil && copyNotRun == nil }

    public static func run(platform: Platform, host: Host, cluster: ClusterAccess?, only: [String]? = nil,
                           log: @escaping @Sendable (String) -> Void) async throws -> BackupRun {
        var run = BackupRun()
        if let backups = PostgresBackups(platform: platform, host: host, cluster: cluster, log: log) {
            // A recovered node's databases that wait for their recovered dump are not dumped.
            let held = RecoveryRecord.load(host.files)?.heldDatabases ?? []
            let wanted = (only ?? backups.spec.databases.map(\.value)).filter { !held.contains($0) }
            do {
                if !held.isEmpty, wanted.isEmpty {
                    throw PostgresError(reason: "RecoveryPending", message: "databases \(held.sorted().joined(separator: ", ")) wait for their recovered dumps "
                                        + "(nodeagent status: recovery); nothing is dumped until then")
                }
                run.databases = try await backups.backup(only: held.isEmpty ? only : wanted)
            } catch {
                // Busy, a state file that cannot be written…: the copy still goes off the node.
                let (reason, message) = PostgresBackups.describe(error)
                run.dumpsNotRun = "\(reason): \(message)"
                log("backup: the dumps did not run: \(message)")
            }
        }
        if let offsite = OffsiteBackups(platform: platform, host: host, log: log) {
            let before = OffsiteRecord.load(host.files).copy?.at
            let record = await offsite.copy()
            run.offsite = record
            if record.copy?.at == before { run.copyNotRun = record.notRun ?? "the copy did not run" }
        }
        return run
    }
}
