#if canImport(Glibc)
import Glibc
#endif
import Logging
import Reconcilers
import ServiceLifecycle
import Synchronization
import UnixSignals
import YAML

/// The daemon's loop: one pass at a time; triggers (poll timer, drift timer, `POST /sync`,
/// SIGHUP) that arrive during a pass coalesce into one more pass.
final class ReconcileLoop: Service, Sendable {
    /// Where the desired state comes from: Git, or a local file (laptops, tests).
    enum Source: Sendable {
        case git(GitSource)
        case file(String)
    }

    let source: Source
    let engine: Engine
    let host: Host
    let status: AgentStatus
    let metrics: AgentMetrics
    let poll: TimeSpan
    let drift: TimeSpan
    let logger: Logger
    /// Buffering the newest one only: a burst of triggers during a pass is one more pass.
    private let triggers: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation
    private let backoff = Mutex(Backoff())
    /// Set by POST /sync; the next pass starts with a clean backoff.
    private let resetPending = Mutex(false)
    private let lastRevision = Mutex<String?>(nil)
    /// Called after every pass (the heartbeat: its signal may have changed).
    private let afterPassHook = Mutex<(@Sendable () -> Void)?>(nil)

    func onPassFinished(_ hook: @escaping @Sendable () -> Void) { afterPassHook.withLock { $0 = hook } }

    /// When the pass under way started (the host's monotonic clock); nil between passes.
    private let passStarted = Mutex<Timestamp?>(nil)

    /// How long the pass under way has been running; nil between passes.
    func passRunningFor() -> TimeSpan? {
        passStarted.withLock { $0 }.map { TimeSpan(milliseconds: host.clock.monotonicNow().millisecondsSinceEpoch - $0.millisecondsSinceEpoch) }
    }
    /// The desired state the last pass converged towards.
    private let current = Mutex<Platform?>(nil)

    /// The Git source's bare mirror.
    static let mirrorDirectory = "/var/lib/nodeagent/source.git"
    static let appliedFile = "/var/lib/nodeagent/applied/platform.yaml"
    static let appliedCommitFile = "/var/lib/nodeagent/applied/commit"
    /// The newest revision the source accepted (fetched, verified, valid), converged or not:
    /// what a pass falls back to when the source refuses, so the node never goes backwards.
    static let acceptedFile = "/var/lib/nodeagent/accepted/platform.yaml"

    /// agent.yaml's `recover: offsite`: before the first pass, a node without state restores
    /// itself from the off-site copy (once: `RecoveryRecord` settles it).
    let recoverFromOffsite: Bool

    init(source: Source, engine: Engine, host: Host, status: AgentStatus, metrics: AgentMetrics, poll: TimeSpan, drift: TimeSpan, logger: Logger,
         recoverFromOffsite: Bool = false) {
        (self.source, self.engine, self.host, self.status, self.metrics, self.poll, self.drift, self.logger) =
            (source, engine, host, status, metrics, poll, drift, logger)
        self.recoverFromOffsite = recoverFromOffsite
        (triggers, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        (firstPassDone, firstPassContinuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Asks for a pass (SIGHUP, timers).
    func trigger() {
        continuation.yield()
    }

    /// An explicit request (POST /sync): every reconciler tries again, backoff or not.
    func sync() {
        resetPending.withLock { $0 = true }
        continuation.yield()
    }

    /// Yields once, when the first pass is over (the status server binds after it).
    let firstPassDone: AsyncStream<Void>
    private let firstPassContinuation: AsyncStream<Void>.Continuation

    func run() async throws {
        // The first pass runs inside the service group, so SIGTERM during it is a graceful
        // shutdown: the pass finishes its step, then the process exits 0.
        await pass()
        firstPassContinuation.yield()
        firstPassContinuation.finish()
        await withTaskGroup(of: Void.self) { group in
            for interval in [poll, drift] {
                group.addTask { [self] in
                    while !Task.isCancelled {
                        // The host's clock: tests of the timers advance a manual one.
                        guard (try? await host.clock.sleep(for: interval)) != nil else { return }
                        trigger()
                    }
                }
            }
            group.addTask { [self] in
                for await _ in await UnixSignalsSequence(trapping: .sighup) { trigger() }
            }
            for await _ in triggers.cancelOnGracefulShutdown() {
                await pass()
            }
            group.cancelAll()
        }
    }

    /// One pass: take the newest good revision (or keep the last applied one), apply it,
    /// record the outcome. Never throws: every failure ends up in /status.
    func pass() async {
        passStarted.withLock { $0 = host.clock.monotonicNow() }
        defer { passStarted.withLock { $0 = nil } }
        if resetPending.withLock({ let r = $0; $0 = false; return r }) { backoff.withLock { $0.reset() } }
        var revision: Revision?
        switch source {
        case .git(let git):
            do {
                revision = try await git.fetch()
                await status.sourceSucceeded(commit: revision!.commit)
                // Accepted: the base the next fetch must descend from, and the fallback.
                try? await git.markApplied(revision!.commit)
            } catch {
                await status.sourceFailed(error)
                logger.warning("source refused", metadata: ["reason": "\(error.reason.rawValue)", "message": "\(error.message)"])
            }
        case .file(let path):
            do {
                let bytes = try FileReading.read(path)
                revision = Revision(commit: "file:\(path)", platform: try DesiredStateLoader.load(bytes, file: path), bytes: bytes)
                await status.sourceSucceeded(commit: revision!.commit)
            } catch {
                await status.sourceFailed(SourceError(reason: .invalid, message: "\(path) is not a valid desired state",
                                                      diagnostics: error.diagnostics))
            }
        }
        metrics.source(ok: revision != nil)
        let platform: Platform
        if let revision {
            platform = revision.platform
            try? host.files.write(Self.acceptedFile, revision.bytes, mode: 0o600)
        } else if let bytes = try? host.files.read(Self.acceptedFile) ?? host.files.read(Self.appliedFile),
                  let last = try? DesiredStateLoader.load(bytes, file: Self.acceptedFile) {
            platform = last   // the last accepted revision keeps being converged
        } else {
            await status.record(event: "nothing to apply yet: no valid revision")
            return
        }
        current.withLock { $0 = platform }
        // The pinger need not wait for the end of a first pass that may take minutes.
        afterPassHook.withLock { $0 }?()
        if let revision, lastRevision.withLock({ $0 }) != revision.commit {
            lastRevision.withLock { $0 = revision.commit }
            backoff.withLock { $0.reset() }   // a new revision deserves a fresh try everywhere
        }
        // A replacement node takes its identity back before WireGuard and K3s come up.
        if recoverFromOffsite, !(await recoverIfNeeded(platform)) { return }
        let now = host.clock.now()
        // Reconcilers in their backoff sit this pass out; the engine blocks what depends on them.
        let result = await engine.apply(platform, resting: backoff.withLock { $0.resting(at: now) })
        backoff.withLock { b in
            for e in result { b.record(e.name.rawValue, e.outcome, at: now) }
        }
        // The engine's one verdict: a resting reconciler is not converged, and a change
        // awaiting its confirmation is not either (the revision is recorded as applied only
        // once it is confirmed).
        let converged = result.converged
        await status.finishPass(result, retryAt: backoff.withLock { $0.retryTimes(at: now) })
        metrics.passFinished(result, at: Double(host.clock.now().millisecondsSinceEpoch) / 1000)
        await HostFacts.record(platform, host: host, metrics: metrics)
        // The provider snapshot as the last `backup snapshot`, the schedule or an upgrade left it.
        if platform.spec.backups?.providerSnapshot != nil, let record = ProviderSnapshotRecord.load(host.files) {
            await status.providerSnapshot(record)
            metrics.providerSnapshot(record)
        } else {
            await status.providerSnapshot(nil)
        }
        // The off-site record as the last copy, check or prune left it (read once).
        let offsiteRecord = platform.spec.backups?.offsite.map { (OffsiteRecord.load(host.files), $0.repository) }
        await status.offsite(offsiteRecord, recovery: RecoveryRecord.load(host.files))
        if let (record, _) = offsiteRecord { metrics.offsite(record) }
        passStarted.withLock { $0 = nil }
        afterPassHook.withLock { $0 }?()
        logger.info("pass", metadata: ["converged": "\(converged)", "revision": "\(revision?.commit.prefix(12) ?? "last applied")"])
        if let revision, converged {
            do {
                try host.files.write(Self.appliedFile, revision.bytes, mode: 0o600)
                try host.files.write(Self.appliedCommitFile, Array((revision.commit + "\n").utf8), mode: 0o600)
                await status.applied(commit: revision.commit, name: platform.name.value)
                metrics.applied(commit: revision.commit)
            } catch {
                await status.record(event: "could not record the applied revision: \(error)")
            }
        }
    }

    /// Settles `recover: offsite` once: restores the node from the off-site copy when it has no
    /// state of its own, or records why not (no repository declared, nothing in it, the node
    /// has state). - Returns: false when the pass must wait (the repository did not answer, a
    /// wrong key): a replacement node must not come up with a new identity.
    func recoverIfNeeded(_ platform: Platform) async -> Bool {
        if RecoveryRecord.load(host.files) != nil { return true }
        // Until it is settled, no backup job runs and no copy leaves the node.
        if RecoveryRecord.underWay(host.files) == nil { try? RecoveryRecord.markUnderWay(host.files, snapshot: "") }
        let logger = self.logger
        let now = host.clock.now()
        guard let offsite = OffsiteBackups(platform: platform, host: host, log: { logger.info("\($0)") }) else {
            try? RecoveryRecord(at: now, outcome: .nothing, snapshot: nil,
                                steps: ["nothing to recover: the desired state declares no spec.backups.offsite"]).save(host.files)
            logger.notice("recover: the desired state declares no spec.backups.offsite: nothing to recover")
            return true
        }
        do {
            let record = try await NodeRecovery(offsite: offsite).recover(force: false) { logger.notice("recover: \($0)") }
            await status.record(event: "recovery from off-site: \(record.outcome.rawValue)\(record.snapshot.map { " (snapshot \($0))" } ?? "")")
            if record.outcome == .recovered, let commit = try? host.files.read(Self.appliedCommitFile),
               let bytes = try? host.files.read(Self.appliedFile), let last = try? DesiredStateLoader.load(bytes, file: Self.appliedFile) {
                await status.applied(commit: String(decoding: commit, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? "", name: last.name.value)
            }
            return true
        } catch let error as OffsiteError where error.reason == "NodeHasState" {
            try? RecoveryRecord(at: now, outcome: .skipped, snapshot: nil, steps: ["not recovered: \(error.message)"]).save(host.files)
            logger.notice("recover: \(error.message)")
            return true
        } catch {
            let e = OffsiteBackups.offsiteError(error)
            logger.error("recover: the off-site copy could not be restored; the first pass waits and it is tried again",
                         metadata: ["reason": "\(e.reason)", "message": "\(e.message)"])
            await status.record(event: "recovery from off-site failed (\(e.reason)): \(e.message); the first pass waits, tried again at the next poll")
            return false
        }
    }

    /// False while `recover: offsite` has not been settled: backup jobs wait (a copy of a blank
    /// or half-recovered node must never become its newest snapshot).
    func recoverySettled() -> Bool { !recoverFromOffsite || RecoveryRecord.load(host.files) != nil }

    /// The desired state the loop converges now (nil before the first valid one).
    func platform() -> Platform? { current.withLock { $0 } }

    /// The address the status server binds: `spec.status.listen` of the desired state the
    /// first pass worked on, else loopback. (A changed address takes a restart.)
    func listenAddress(override: String?) -> (host: String, port: Int) {
        if let override, let hp = try? HostPort(parsing: override) { return (hp.host, Int(hp.port.value)) }
        if let listen = current.withLock({ $0 })?.spec.status?.listen { return (listen.host, Int(listen.port.value)) }
        return ("127.0.0.1", 9430)
    }

    /// The contents of every secret file the desired state names, line by line: what /status
    /// redacts wherever it was echoed.
    func secretValues() -> [String] {
        guard let platform = current.withLock({ $0 }) else { return [] }
        var out: [String] = []
        for (_, file) in platform.secretFiles {
            guard let bytes = try? host.files.readSecret(file.value, limit: 1 << 20) else { continue }
            for line in String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline).map(String.init) {
                out.append(line)
                // `key=value` files (ovh.conf): the value alone too.
                if let eq = line.firstIndex(of: "=") {
                    let value = String(line[line.index(after: eq)...].drop { $0 == " " || $0 == "\t" })
                    if value.count >= 8 { out.append(value) }
                }
            }
        }
        return out
    }

    /// The bearer token for POST /sync, from `spec.status.tokenFile`.
    func syncToken() -> [UInt8]? {
        // A regular root-owned 0600 file, never through a link: otherwise POST /sync stays off.
        guard let file = current.withLock({ $0 })?.spec.status?.tokenFile,
              let bytes = try? host.files.readSecret(file.value, limit: 64 << 10) else { return nil }
        return Array(String(decoding: bytes, as: UTF8.self).split(separator: "\n").first.map { Array($0.utf8) } ?? [])
    }
}
