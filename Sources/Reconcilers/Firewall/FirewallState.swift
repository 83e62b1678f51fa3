#if canImport(Glibc)
internal import Glibc
#endif

/// What the firewall reconciler keeps under `/var/lib/nodeagent/firewall/`: the last applied
/// ruleset with its canonical listing (to see drift), the rollback ruleset, and the revert timer.
public struct FirewallState: Sendable {
    public static let directory = "/var/lib/nodeagent/firewall"
    static let appliedScript = directory + "/applied.nft"
    static let appliedListing = directory + "/applied.listing"
    static let rollbackFile = directory + "/rollback.nft"
    static let pendingFile = directory + "/pending.nft"
    static let revertedFile = directory + "/reverted.nft"
    static let pidFile = directory + "/revert.pid"

    public struct Applied: Sendable, Equatable {
        /// The table as nodeagent rendered it.
        public var script: String
        /// `nft -s list table` right after loading it: what the kernel made of it.
        public var listing: String
    }

    let host: Host

    public init(host: Host) {
        self.host = host
    }

    /// `nodeagent confirm`: keeps the pending change.
    /// - Parameters:
    ///   - reset: also forget a rolled-back change, so it is tried again.
    /// - Returns: whether a revert was armed.
    public func confirm(reset: Bool) throws -> Bool {
        if reset { try clearReverted() }
        return try disarm()
    }

    func hostPath(_ path: String) -> String {
        host.files.hostPath(path)
    }

    func applied() throws -> Applied? {
        guard let script = try host.files.read(Self.appliedScript), let listing = try host.files.read(Self.appliedListing) else { return nil }
        return Applied(script: String(decoding: script, as: UTF8.self), listing: String(decoding: listing, as: UTF8.self))
    }

    func saveApplied(_ applied: Applied) throws {
        try host.files.write(Self.appliedListing, Array(applied.listing.utf8), mode: 0o600)
        try host.files.write(Self.appliedScript, Array(applied.script.utf8), mode: 0o600)
    }

    func saveRollback(_ script: String) throws {
        try host.files.write(Self.rollbackFile, Array(script.utf8), mode: 0o600)
    }

    func reverted() throws -> String? {
        try host.files.read(Self.revertedFile).map { String(decoding: $0, as: UTF8.self) }
    }

    func clearReverted() throws { try host.files.remove(Self.revertedFile) }

    /// Starts the revert timer: after `span`, load the rollback ruleset and mark the pending
    /// change as reverted. A separate session, so it outlives nodeagent.
    /// The name the timer's shell carries as `$0`, so a PID is only ever taken for our timer.
    static let timerMarker = "nodeagent-firewall-revert"

    /// The first line of a pending change that waits for the operator's `nodeagent confirm`.
    /// Only such a change, once rolled back, is not retried: a change rolled back because
    /// nodeagent died mid-way is retried once the previous ruleset is back.
    static let operatorMark = "# nodeagent: awaiting the operator's confirmation\n"

    func arm(pending script: String, after span: TimeSpan, byOperator: Bool) throws {
        try disarm()
        try host.files.write(Self.pendingFile, Array(((byOperator ? Self.operatorMark : "") + script).utf8), mode: 0o600)
        let nft = SystemCommandRunner.resolve("nft") ?? "/usr/sbin/nft"
        // Marked as reverted before the rollback loads: if the timer dies in between, the
        // change is not retried (a human looks) rather than re-applied over the rollback.
        // SIGUSR1 fires it at once (the tests' way to move past the bound without waiting for
        // it; an operator's too); SIGTERM (disarm) ends it without reverting.
        let shell = "trap 'kill $s 2>/dev/null' USR1; sleep \(format3(span)) & s=$!; wait $s;"
            + " mv -f '\(hostPath(Self.pendingFile))' '\(hostPath(Self.revertedFile))'"
            + " && '\(nft)' -f '\(hostPath(Self.rollbackFile))'; rm -f '\(hostPath(Self.pidFile))'"
        let pid = try host.commands.spawnDetached(["/bin/sh", "-c", shell, Self.timerMarker])
        try host.files.write(Self.pidFile, Array("\(pid)\n".utf8), mode: 0o600)
    }

    /// Whether a revert timer is waiting to fire.
    func isArmed() throws -> Bool {
        guard let pid = try armedPID() else { return false }
        return isOurTimer(pid)
    }

    /// Stops the revert timer and forgets the pending change: the new ruleset stays.
    /// - Returns: whether a timer was armed.
    @discardableResult
    func disarm() throws -> Bool {
        var wasArmed = false
        if let pid = try armedPID(), isOurTimer(pid) {
            wasArmed = true
            host.commands.stopDetached(pid)
        }
        try host.files.remove(Self.pidFile)
        try host.files.remove(Self.pendingFile)
        return wasArmed
    }

    private func armedPID() throws -> Int32? {
        guard let bytes = try host.files.read(Self.pidFile) else { return nil }
        return Int32(String(decoding: bytes, as: UTF8.self).filter(\.isNumber))
    }

    /// A PID can be reused once the timer is gone: only a live shell carrying our marker counts.
    func isOurTimer(_ pid: Int32) -> Bool {
        // A live process has its command line in /proc (a zombie's is empty).
        guard let cmdline = try? host.system.read("/proc/\(pid)/cmdline") else { return false }
        return cmdline.split(separator: 0).contains { String(decoding: $0, as: UTF8.self) == Self.timerMarker }
    }

    /// Seconds with millisecond precision, as `sleep` takes them.
    private func format3(_ span: TimeSpan) -> String {
        "\(span.milliseconds / 1000).\(String(1000 + span.milliseconds % 1000).dropFirst())"
    }
}

/// Test-only crash points: with `NODEAGENT_CRASH_AT=NAME` in the environment the process
/// kills itself with SIGKILL at that point, as a power cut or OOM kill would; with
/// `NODEAGENT_PAUSE_AT=NAME` it stops itself there (SIGSTOP) until SIGCONT: a test sees it
/// stopped at that point, signals into it, and lets it go on — no waiting on a timer.
/// Compiled into debug builds only (what `swift test` runs): in a release binary, the one
/// nodes run, these are no-ops whatever the environment says.
public enum FaultInjection {
    public static func pauseIfRequested(at point: String) {
        #if DEBUG
        if let wanted = getenv("NODEAGENT_PAUSE_AT"), String(cString: wanted) == point {
            raise(SIGSTOP)   // until the test, having seen it stopped here, sends SIGCONT
        }
        #endif
    }

    public static func crashIfRequested(at point: String) {
        #if DEBUG
        if let wanted = getenv("NODEAGENT_CRASH_AT"), String(cString: wanted) == point {
            kill(getpid(), SIGKILL)
        }
        #endif
    }
}
