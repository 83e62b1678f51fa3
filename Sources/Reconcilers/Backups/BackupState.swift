import YAML

/// What the backups remember between runs and restarts (`/var/lib/nodeagent/backups/state.json`):
/// when each job last ran (for the catch-up after downtime), each database's last result, the
/// last drill, and failure counts by reason (for the metrics).
public struct BackupState: Sendable, Equatable {
    public static let path = "/var/lib/nodeagent/backups/state.json"

    public struct Result: Sendable, Equatable {
        public var at: Timestamp
        public var ok: Bool
        /// `Succeeded`, or why not: `ConnectionFailed`, `DumpFailed`, `ChecksumMismatch`, `RowCountMismatch`…
        public var reason: String
        public var message: String
        public var durationSeconds: Double
        public var sizeBytes: Int64
        public var lastSuccess: Timestamp?

        public init(at: Timestamp, ok: Bool, reason: String, message: String, durationSeconds: Double, sizeBytes: Int64 = 0,
                    lastSuccess: Timestamp? = nil) {
            (self.at, self.ok, self.reason, self.message, self.durationSeconds, self.sizeBytes, self.lastSuccess) =
                (at, ok, reason, message, durationSeconds, sizeBytes, lastSuccess)
        }
    }

    /// When the scheduled backup job last started (caught-up runs included).
    public var lastBackupRun: Timestamp?
    public var lastDrillRun: Timestamp?
    public var databases: [String: Result] = [:]
    public var drill: Result?
    /// "backup/ConnectionFailed" → count, "drill/ChecksumMismatch" → count.
    public var failures: [String: Int] = [:]

    public init() {}

    public static func load(_ files: any FileSystem) -> BackupState {
        guard let bytes = try? files.read(path), let j = JSONValue.parse(bytes) else { return BackupState() }
        var s = BackupState()
        s.lastBackupRun = j["lastBackupRun"]?.string.flatMap(Timestamp.init(rfc3339:))
        s.lastDrillRun = j["lastDrillRun"]?.string.flatMap(Timestamp.init(rfc3339:))
        for m in j["databases"]?.members ?? [] { if let r = Result(m.value) { s.databases[m.key] = r } }
        s.drill = j["drill"].flatMap(Result.init)
        for m in j["failures"]?.members ?? [] { s.failures[m.key] = m.value.int ?? 0 }
        return s
    }

    public func save(_ files: any FileSystem) throws {
        try files.makeDirectory("/var/lib/nodeagent/backups", mode: 0o700)
        var members: [JSONValue.Member] = []
        if let t = lastBackupRun { members.append(.init("lastBackupRun", .string(t.rfc3339Milliseconds))) }
        if let t = lastDrillRun { members.append(.init("lastDrillRun", .string(t.rfc3339Milliseconds))) }
        members.append(.init("databases", .object(databases.keys.sorted().map { .init($0, databases[$0]!.json) })))
        if let drill { members.append(.init("drill", drill.json)) }
        members.append(.init("failures", .object(failures.keys.sorted().map { .init($0, .int(failures[$0]!)) })))
        try files.write(Self.path, Array((JSONValue.object(members).jsonText + "\n").utf8), mode: 0o600)
    }

    /// Records a result, keeping the time of the last success across failures.
    static func merge(_ result: Result, into old: Result?) -> Result {
        var r = result
        r.lastSuccess = result.ok ? result.at : old?.lastSuccess
        if !result.ok, let old { r.sizeBytes = old.sizeBytes }
        return r
    }
}

extension BackupState.Result {
    var json: JSONValue {
        var m: [JSONValue.Member] = [
            .init("at", .string(at.rfc3339Milliseconds)), .init("ok", .bool(ok)), .init("reason", .string(reason)),
            .init("message", .string(message)), .init("durationSeconds", .double(durationSeconds)), .init("sizeBytes", .int(Int(sizeBytes))),
        ]
        if let lastSuccess { m.append(.init("lastSuccess", .string(lastSuccess.rfc3339Milliseconds))) }
        return .object(m)
    }

    init?(_ j: JSONValue) {
        guard let at = j["at"]?.string.flatMap(Timestamp.init(rfc3339:)), case .bool(let ok)? = j["ok"] else { return nil }
        let duration: Double
        switch j["durationSeconds"] {
        case .double(let d)?: duration = d
        case .int(let i)?: duration = Double(i)
        default: duration = 0
        }
        self.init(at: at, ok: ok, reason: j["reason"]?.string ?? "", message: j["message"]?.string ?? "", durationSeconds: duration,
                  sizeBytes: Int64(j["sizeBytes"]?.int ?? 0), lastSuccess: j["lastSuccess"]?.string.flatMap(Timestamp.init(rfc3339:)))
    }
}

/// When the scheduled jobs are due, from the schedule and the last run: like a systemd timer
/// with `Persistent=true`, a run missed while the node was down happens once when it is back
/// (not once per missed run), and a job that never ran runs at once.
public enum BackupSchedule {
    public static func isDue(_ schedule: CronSchedule, lastRun: Timestamp?, now: Timestamp) -> Bool {
        // Never ran, or "ran in the future" (a clock that was wrong then): run.
        guard let lastRun, lastRun <= now.adding(TimeSpan(milliseconds: 60_000)) else { return true }
        guard let scheduled = schedule.previous(atOrBefore: now) else { return false }
        return lastRun < scheduled
    }

    /// When to look again: the earliest next firing of the schedules, at most `cap` from now
    /// (so a changed desired state is seen).
    public static func wake(_ schedules: [CronSchedule], now: Timestamp, cap: TimeSpan) -> Timestamp {
        let limit = now.adding(cap)
        return schedules.compactMap { $0.next(after: now) }.reduce(limit) { min($0, $1) }
    }
}
