import Logging
import Reconcilers
import ServiceLifecycle

/// Runs the PostgreSQL backups and restore drills of the applied desired state on their cron
/// schedules (UTC), one job at a time: a job never overlaps itself or another (and the lock
/// file keeps `nodeagent backup …` out while one runs). A run missed while the node was down
/// is made up once at start; results go to the state file, `/status` (the backups
/// reconciler's condition) and the metrics.
struct BackupScheduler: Service {
    let loop: ReconcileLoop
    let host: Host
    let options: PassOptions
    let metrics: AgentMetrics
    let logger: Logger

    func run() async throws {
        metrics.backups(BackupState.load(host.files))
        if let record = ProviderSnapshotRecord.load(host.files) { metrics.providerSnapshot(record) }
        // On SIGTERM the loop is cancelled: a job in progress stops at its next await (a
        // dump's partial file is removed by the next run), the daemon exits.
        await cancelWhenGracefulShutdown { await self.schedule() }
    }

    func schedule() async {
        // The last starts as this process saw them: if the state file cannot be written (a full
        // disk), a failing job is still not repeated every minute.
        var lastBackup: Timestamp?, lastDrill: Timestamp?, lastSnapshot: Timestamp?
        while !Task.isCancelled {
            guard loop.platform() != nil else {
                // Before the first pass has a desired state.
                guard (try? await Task.sleep(for: .seconds(1))) != nil else { return }
                continue
            }
            let now = host.clock.now()
            var schedules: [CronSchedule] = []
            if let platform = loop.platform(),
               let backups = PostgresBackups(platform: platform, host: host, cluster: options.cluster(on: host),
                                             log: { [logger] in logger.info("\($0)") }) {
                let spec = backups.spec
                schedules.append(spec.schedule)
                var state = BackupState.load(host.files)
                if BackupSchedule.isDue(spec.schedule, lastRun: [state.lastBackupRun, lastBackup].compactMap { $0 }.max(), now: now) {
                    lastBackup = now
                    logger.info("backup: starting", metadata: ["schedule": "\(spec.schedule)"])
                    do {
                        _ = try await backups.backup()
                    } catch {
                        logger.warning("backup: not run", metadata: ["reason": "\(error)"])
                    }
                    state = BackupState.load(host.files)
                    metrics.backups(state)
                }
                if let drill = spec.restoreDrill, drill.enabled {
                    schedules.append(drill.schedule)
                    // A drill needs a good dump: before the first one exists it waits.
                    let drillNow = host.clock.now()
                    if state.databases.values.contains(where: { $0.lastSuccess != nil }),
                       BackupSchedule.isDue(drill.schedule, lastRun: [state.lastDrillRun, lastDrill].compactMap { $0 }.max(), now: drillNow) {
                        lastDrill = drillNow
                        do {
                            _ = try await backups.drill()
                        } catch {
                            logger.warning("restore drill: not run", metadata: ["reason": "\(error)"])
                        }
                        metrics.backups(BackupState.load(host.files))
                    }
                }
            }
            if let platform = loop.platform(), let snapshot = platform.spec.backups?.providerSnapshot, let schedule = snapshot.schedule {
                schedules.append(schedule)
                let snapNow = host.clock.now()
                if BackupSchedule.isDue(schedule, lastRun: [ProviderSnapshotRecord.load(host.files)?.at, lastSnapshot].compactMap { $0 }.max(), now: snapNow) {
                    lastSnapshot = snapNow
                    let record = await snapshot.takeSnapshot(host: host, node: platform.name.value) { [logger] in logger.info("snapshot: \($0)") }
                    if !record.ok { logger.warning("provider snapshot failed", metadata: ["reason": "\(record.reason)", "message": "\(record.message)"]) }
                    metrics.providerSnapshot(record)
                }
            }
            let wake = BackupSchedule.wake(schedules, now: host.clock.now(), cap: TimeSpan(milliseconds: 60_000))
            do {
                try await host.clock.sleep(until: wake)
            } catch {
                return
            }
        }
    }
}
