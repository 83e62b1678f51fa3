#if canImport(Glibc)
import Glibc
#endif
import Logging
import Reconcilers
import ServiceLifecycle
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

    static let appliedFile = "/var/lib/nodeagent/applied/platform.yaml"
    static let appliedCommitFile = "/var/lib/nodeagent/applied/commit"

    init(source: Source, engine: Engine, host: Host, status: AgentStatus, metrics: AgentMetrics, poll: TimeSpan, drift: TimeSpan, logger: Logger) {
        (self.source, self.engine, self.host, self.status, self.metrics, self.poll, self.drift, self.logger) =
            (source, engine, host, status, metrics, poll, drift, logger)
        (triggers, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    /// Asks for a pass (POST /sync, SIGHUP, timers).
    func trigger() {
        continuation.yield()
    }

    func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            for interval in [poll, drift] {
                group.addTask { [self] in
                    while !Task.isCancelled {
                        guard (try? await Task.sleep(for: interval.duration)) != nil else { return }
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
        var revision: Revision?
        switch source {
        case .git(let git):
            do {
                revision = try await git.fetch()
                await status.sourceSucceeded(commit: revision!.commit)
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
        } else if let bytes = try? host.files.read(Self.appliedFile), let last = try? DesiredStateLoader.load(bytes, file: Self.appliedFile) {
            platform = last   // the last good revision keeps being converged
        } else {
            await status.record(event: "nothing to apply yet: no valid revision")
            return
        }
        let entries = await engine.apply(platform)
        let converged = entries.allSatisfy { e in
            switch e.outcome {
            case .notDeclared, .notHandled: return true
            case .applied(_, let c): return c.status == .ready || c.reason == "AwaitingConfirmation"
            default: return false
            }
        }
        await status.finishPass(entries, converged: converged)
        metrics.passFinished(entries, converged: converged, at: Double(host.clock.now().millisecondsSinceEpoch) / 1000)
        logger.info("pass", metadata: ["converged": "\(converged)", "revision": "\(revision?.commit.prefix(12) ?? "last applied")"])
        if let revision, converged {
            do {
                try host.files.write(Self.appliedFile, revision.bytes, mode: 0o600)
                try host.files.write(Self.appliedCommitFile, Array((revision.commit + "\n").utf8), mode: 0o600)
                if case .git(let git) = source { try await git.markApplied(revision.commit) }
                await status.applied(commit: revision.commit, name: platform.name.value)
                metrics.applied(commit: revision.commit)
            } catch {
                await status.record(event: "could not record the applied revision: \(error)")
            }
        }
    }

    /// The address the status server binds: `spec.status.listen`, else loopback.
    func listenAddress(override: String?) -> (host: String, port: Int) {
        if let override, let hp = try? HostPort(parsing: override) { return (hp.host, Int(hp.port.value)) }
        if let bytes = try? host.files.read(Self.appliedFile), let p = try? DesiredStateLoader.load(bytes, file: Self.appliedFile),
           let listen = p.spec.status?.listen {
            return (listen.host, Int(listen.port.value))
        }
        if case .file(let path) = source, let p = try? DesiredStateLoader.load(path: path), let listen = p.spec.status?.listen {
            return (listen.host, Int(listen.port.value))
        }
        return ("127.0.0.1", 9430)
    }

    /// The bearer token for POST /sync, from `spec.status.tokenFile`.
    func syncToken() -> [UInt8]? {
        let platform = (try? host.files.read(Self.appliedFile)).flatMap { try? DesiredStateLoader.load($0, file: Self.appliedFile) }
            ?? { if case .file(let path) = source { return try? DesiredStateLoader.load(path: path) } else { return nil } }()
        guard let file = platform?.spec.status?.tokenFile, let bytes = try? host.files.read(file.value) else { return nil }
        return Array(String(decoding: bytes, as: UTF8.self).split(separator: "\n").first.map { Array($0.utf8) } ?? [])
    }
}
