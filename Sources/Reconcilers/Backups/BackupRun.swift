public import KubeClient

/// One backup run, scheduled or on demand: the dumps of `spec.backups.postgres` (if declared),
/// then the off-site copy of `spec.backups.offsite` (if declared) — whatever the dumps did, so
/// the secrets and the datastore still leave the node when a database is down.
public struct BackupRun: Sendable {
    public var databases: [String: BackupState.Result] = [:]
    public var offsite: OffsiteRecord?

    public var ok: Bool { databases.values.allSatisfy(\.ok) && (offsite?.copy?.ok ?? true) }

    public static func run(platform: Platform, host: Host, cluster: ClusterAccess?, only: [String]? = nil,
                           log: @escaping @Sendable (String) -> Void) async throws -> BackupRun {
        var run = BackupRun()
        if let backups = PostgresBackups(platform: platform, host: host, cluster: cluster, log: log) {
            run.databases = try await backups.backup(only: only)
        }
        if let offsite = OffsiteBackups(platform: platform, host: host, log: log) {
            run.offsite = await offsite.copy()
        }
        return run
    }
}
