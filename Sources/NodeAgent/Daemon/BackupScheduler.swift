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
        metrics.offsite(OffsiteRecord.load(host.files))
        // On SIGTERM the loop is cancelled: a job in progress stops at its next await (a
        // dump's partial file is removed by the next run), the daemon exits.
        await cancelWhenGracefulShutdown { await self.schedule() }
    }

    func schedule() async {
        // The last starts as this process saw them: if the state file cannot be written (a full
        // disk), a failing job is still not repeated every minute.
        var lastBackup: Timestamp?, lastDrill: Timestamp?, lastSnapshot: Timestamp?
        var lastCopy: Timestamp?, lastCheck: Timestamp?, lastPrune: Timestamp?
        // A copy that could not start (another job held the lock) is tried again.
        var copyAgain = false
        while !Task.isCancelled {
            guard loop.platform() != nil, loop.recoverySettled() else {
                // Before the first pass has a desired state, or while the node recovers.
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
                // A node that never copied off-site (a new node, or one just recovered, once its
                // databases are back) runs a backup at once: it protects itself from day one.
                // A recovered node's databases that wait for (or were refused) their recovered
                // dump are not dumped: an empty or foreign database's dump must never become
                // the newest. While any waits, nothing is dumped and only the copy runs.
                let recovery = RecoveryRecord.load(host.files)
                let recovering = !(recovery?.pendingDatabases.isEmpty ?? true)
                let held = recovery?.heldDatabases ?? []
                let neverCopied = backups.offsite != nil && OffsiteRecord.load(host.files).copy == nil && lastBackup == nil
                if neverCopied || BackupSchedule.isDue(spec.schedule, lastRun: [state.lastBackupRun, lastBackup].compactMap { $0 }.max(), now: now) {
                    lastBackup = now
                    let only = held.isEmpty ? nil : spec.databases.map(\.value).filter { !held.contains($0) }
                    if recovering || only?.isEmpty == true {
                        logger.info("backup: no dump while recovered databases wait for theirs", metadata: ["databases": "\(held.sorted())"])
                    } else {
                        logger.info("backup: starting", metadata: ["schedule": "\(spec.schedule)"])
                        do {
                            _ = try await backups.backup(only: only)
                        } catch {
                            logger.warning("backup: not run", metadata: ["reason": "\(error)"])
                        }
                    }
                    state = BackupState.load(host.files)
                    metrics.backups(state)
                    // Every run ends off the node.
                    if let offsite = backups.offsite {
                        let record = await offsite.copy()
                        copyAgain = record.notRun?.hasPrefix("Busy") == true
                        metrics.offsite(record)
                    }
                    // The conditions changed: the loop need not wait for its next timer.
                    loop.trigger()
                }
                // A recovered node's databases, once their server answers.
                if let record = await backups.restorePendingDatabases(), record.pendingDatabases.isEmpty { loop.trigger() }
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
            if let platform = loop.platform(), let offsite = OffsiteBackups(platform: platform, host: host, log: { [logger] in logger.info("\($0)") }) {
                var record = OffsiteRecord.load(host.files)
                let schedule = offsite.spec.schedule ?? OffsiteSpec.defaultSchedule
                if copyAgain || (platform.spec.backups?.postgres == nil
                                 && BackupSchedule.isDue(schedule, lastRun: [record.copy?.at, lastCopy].compactMap { $0 }.max(), now: host.clock.now())) {
                    lastCopy = host.clock.now()
                    record = await offsite.copy()
                    copyAgain = record.notRun?.hasPrefix("Busy") == true
                    if !copyAgain { loop.trigger() }
                }
                if platform.spec.backups?.postgres == nil { schedules.append(schedule) }
                // Check and prune a repository that holds something, on their schedules (the
                // first ones at the first firing after the first copy).
                if let first = record.copy?.lastSuccess {
                    schedules += [offsite.spec.check.schedule, offsite.spec.prune]
                    if BackupSchedule.isDue(offsite.spec.prune, lastRun: [record.prune?.at ?? first, lastPrune].compactMap { $0 }.max(), now: host.clock.now()) {
                        lastPrune = host.clock.now()
                        record = await offsite.prune()
                    }
                    if BackupSchedule.isDue(offsite.spec.check.schedule, lastRun: [record.check?.at ?? first, lastCheck].compactMap { $0 }.max(),
                                            now: host.clock.now()) {
                        lastCheck = host.clock.now()
                        record = await offsite.check()
                    }
                }
                metrics.offsite(record)
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
