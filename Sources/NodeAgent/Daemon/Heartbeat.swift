import Logging
import Reconcilers
import ServiceLifecycle
import Synchronization

/// The dead-man's switch (`spec.heartbeat`): pings the URL from its file at least every
/// `interval` while the daemon runs — a plain ping while nothing has failed, the failure signal
/// (healthchecks.io's `URL/fail`, the reasons as the body) while a reconciler has failed or
/// needs a person — and at once when the last pass changes that. A ping that fails is retried
/// twice (2 s, then 4 s later, on the host's clock) and counted; it never holds up a pass. When
/// the node dies or the daemon hangs, the pings stop and the service off the node alerts.
///
/// The URL is a capability: it goes to `curl` in a config on stdin (`curl -K -`), never on its
/// command line, and never into the log, `/status` or `/metrics`.
final class Heartbeat: Service, Sendable {
    let loop: ReconcileLoop
    let host: Host
    let status: AgentStatus
    let metrics: AgentMetrics
    let logger: Logger
    /// A nudge after each pass: the signal may have changed.
    private let nudges = Nudge()
    private let lastSignal = Mutex<Signal?>(nil)

    enum Signal: String, Sendable { case ok, fail }

    init(loop: ReconcileLoop, host: Host, status: AgentStatus, metrics: AgentMetrics, logger: Logger) {
        (self.loop, self.host, self.status, self.metrics, self.logger) = (loop, host, status, metrics, logger)
    }

    /// Called after every pass.
    func passFinished() { nudges.signal() }

    func run() async throws {
        await cancelWhenGracefulShutdown { await self.beat() }
    }

    func beat() async {
        // On the monotonic clock: a wall clock stepped back at boot must not stretch the wait.
        var lastPing: Timestamp?
        // After a round of tries that all failed: try again sooner than a whole interval
        // (30 s, 1 min, … up to the interval), so one network blip is not a missed period.
        var retryAt: Timestamp?
        var failedRounds = 0
        while !Task.isCancelled {
            guard let spec = loop.platform()?.spec.section(HeartbeatSpec.self) else {
                // No heartbeat declared (yet): wait for the next pass.
                guard await nextNudge() else { return }
                continue
            }
            let (signal, body) = await signal()
            let now = host.clock.monotonicNow()
            // After a failed round, the retry time rules; else the interval since the last success.
            let due = retryAt.map { now >= $0 } ?? (lastPing.map { now >= $0.adding(spec.interval) } ?? true)
            if due || signal != lastSignal.withLock({ $0 }) {
                if await ping(spec, signal: signal, body: body) {
                    lastPing = now
                    retryAt = nil
                    failedRounds = 0
                } else {
                    failedRounds += 1
                    lastPing = lastPing ?? now
                    retryAt = host.clock.monotonicNow().adding(TimeSpan(milliseconds: min(spec.interval.milliseconds,
                                                                                          30_000 << min(failedRounds - 1, 10))))
                }
            }
            // Until the interval is up (or the retry), or a pass ends, whichever is first.
            let next = retryAt ?? lastPing?.adding(spec.interval)
            let wait = next.map { max(0, $0.millisecondsSinceEpoch - host.clock.monotonicNow().millisecondsSinceEpoch) } ?? 0
            let woken = await withTaskGroup(of: Bool.self) { group in
                group.addTask { [host] in (try? await host.clock.sleep(for: TimeSpan(milliseconds: wait))) != nil }
                group.addTask { await self.nextNudge() }
                let first = await group.next() ?? false
                group.cancelAll()
                return first
            }
            if !woken, Task.isCancelled { return }
        }
    }

    /// Waits for the next pass's nudge (one waiter at a time: the loop above awaits each).
    private func nextNudge() async -> Bool { await nudges.wait() }

    /// A pass running longer than this is taken for a hung nodeagent: the failure signal goes
    /// out instead of a plain ping (longer than any step waits by itself: K3s's Ready wait is
    /// 5 minutes by default, a dump's lock wait 5).
    static let hungAfter = TimeSpan(milliseconds: 30 * 60_000)

    /// `fail` while a reconciler failed or needs a person, with one line per reconciler (its
    /// condition, redacted as /status is), or while a pass has been running for longer than
    /// `hungAfter`; `ok` otherwise.
    func signal() async -> (Signal, String) {
        let name = loop.platform()?.name.value ?? "node"
        if let running = loop.passRunningFor(), running >= Self.hungAfter {
            return (.fail, "nodeagent on \(name): a pass has been running for \(running): nodeagent may be hung\n")
        }
        let failing = await status.failing()
        guard !failing.isEmpty else { return (.ok, "") }
        let lines = failing.map { "\($0.name): \($0.condition.status.rawValue) \($0.condition.reason): \($0.condition.message)" }
        let text = "nodeagent on \(name): \(lines.joined(separator: "\n"))\n"
        return (.fail, StatusRedaction.redact(text, secrets: loop.secretValues()))
    }

    /// - Returns: whether a try got through.
    @discardableResult
    func ping(_ spec: HeartbeatSpec, signal: Signal, body: String) async -> Bool {
        let url: HeartbeatURL
        do {
            url = try HeartbeatURL.read(spec.urlFile, files: host.files, what: "spec.heartbeat.urlFile")
        } catch {
            metrics.heartbeat(ok: false, at: nil)
            await status.heartbeat(ok: false, signal: signal, at: host.clock.now(), interval: spec.interval, why: "\(error)")
            return false
        }
        var why = ""
        for attempt in 0..<3 {
            if attempt > 0 {
                guard (try? await host.clock.sleep(for: TimeSpan(milliseconds: 2000 << (attempt - 1)))) != nil else { return false }
            }
            let result = try? await host.commands.run(Self.curl(url, signal: signal, body: body))
            if result?.exitCode == 0 {
                let now = host.clock.now()
                lastSignal.withLock { $0 = signal }
                metrics.heartbeat(ok: true, at: now)
                await status.heartbeat(ok: true, signal: signal, at: now, interval: spec.interval, why: nil)
                return true
            }
            // curl's own words (it never repeats the URL with --silent --show-error), redacted anyway.
            why = StatusRedaction.redact(result.map { "curl exit \($0.exitCode.map(String.init) ?? "?"): \($0.stderr)" } ?? "curl could not run",
                                         secrets: [url.value])
            metrics.heartbeat(ok: false, at: nil)
        }
        logger.warning("heartbeat ping failed", metadata: ["to": "\(url.shown)", "why": "\(why)"])
        await status.heartbeat(ok: false, signal: signal, at: host.clock.now(), interval: spec.interval, why: why)
        return false
    }

    /// `curl -K -`: the URL (and the body of a failure signal) in a config read from stdin.
    static func curl(_ url: HeartbeatURL, signal: Signal, body: String) -> Command {
        var config = CurlConfig(url: signal == .fail ? url.value + "/fail" : url.value)
        if signal == .fail { config.set("data-raw", String(body.prefix(10_000))) }
        return config.command(["--fail", "--max-time", "10"], timeout: .seconds(15))
    }
}

/// A wake-up for one waiter that may be cancelled and waited for again (an AsyncStream ends
/// for good when a waiting iteration is cancelled); signals while nobody waits are kept as one.
final class Nudge: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Bool, Never>?
    }
    private let state = Mutex(State())

    func signal() {
        let waiter = state.withLock { s -> CheckedContinuation<Bool, Never>? in
            guard let w = s.waiter else {
                s.pending = true
                return nil
            }
            s.waiter = nil
            return w
        }
        waiter?.resume(returning: true)
    }

    /// - Returns: true when signalled, false when cancelled.
    func wait() async -> Bool {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let now = state.withLock { s -> Bool? in
                    if s.pending {
                        s.pending = false
                        return true
                    }
                    if Task.isCancelled { return false }
                    s.waiter = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            let waiter = state.withLock { s -> CheckedContinuation<Bool, Never>? in
                let w = s.waiter
                s.waiter = nil
                return w
            }
            waiter?.resume(returning: false)
        }
    }
}
