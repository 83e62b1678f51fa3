public import YAML

/// The off-site copy as the node last saw it: `backups/offsite.json` under the state
/// directory, for `/status`, `/metrics`, the schedule and the backups reconciler's condition.
public struct OffsiteRecord: Sendable, Equatable {
    public struct Step: Sendable, Equatable {
        public var at: Timestamp
        public var ok: Bool
        public var reason: String
        public var message: String
        public var lastSuccess: Timestamp?
        /// The failure is one retrying cannot mend (a wrong key, a changed host key, a missing
        /// secret file): the condition is Stalled.
        public var needsHuman: Bool

        public init(at: Timestamp, ok: Bool, reason: String, message: String, lastSuccess: Timestamp?, needsHuman: Bool = false) {
            (self.at, self.ok, self.reason, self.message, self.lastSuccess, self.needsHuman) = (at, ok, reason, message, lastSuccess, needsHuman)
        }

        var json: JSONValue {
            .object(["at": .string(at.rfc3339), "ok": .bool(ok), "reason": .string(reason), "message": .string(message),
                     "lastSuccess": lastSuccess.map { .string($0.rfc3339) } ?? .null, "needsHuman": .bool(needsHuman)])
        }

        init?(_ j: JSONValue?) {
            guard let j, let at = j["at"]?.string.flatMap(Timestamp.init(rfc3339:)) else { return nil }
            self.init(at: at, ok: j["ok"] == .bool(true), reason: j["reason"]?.string ?? "", message: j["message"]?.string ?? "",
                      lastSuccess: j["lastSuccess"]?.string.flatMap(Timestamp.init(rfc3339:)), needsHuman: j["needsHuman"] == .bool(true))
        }
    }

    public static let path = "/var/lib/nodeagent/backups/offsite.json"

    /// The last copy (`restic backup` after a backup run).
    public var copy: Step?
    /// The snapshot the last good copy made, and what it holds.
    public var snapshot: String?
    public var holds: [String] = []
    public var skipped: [String] = []
    /// Bytes the last good copy added to the repository (after deduplication and compression).
    public var addedBytes: Int64?
    public var processedBytes: Int64?
    public var check: Step?
    public var prune: Step?
    /// Why the last call did not run at all (not saved): another job held the lock, or a
    /// recovery is under way. Such a call changes nothing in the record.
    public var notRun: String?

    public init() {}

    public static func load(_ files: any FileSystem) -> OffsiteRecord {
        guard let bytes = try? files.read(path), let j = JSONValue.parse(bytes) else { return OffsiteRecord() }
        var r = OffsiteRecord()
        r.copy = Step(j["copy"])
        r.snapshot = j["snapshot"]?.string
        r.holds = (j["holds"]?.array ?? []).compactMap(\.string)
        r.skipped = (j["skipped"]?.array ?? []).compactMap(\.string)
        r.addedBytes = j["addedBytes"]?.int.map(Int64.init)
        r.processedBytes = j["processedBytes"]?.int.map(Int64.init)
        r.check = Step(j["check"])
        r.prune = Step(j["prune"])
        return r
    }

    public func save(_ files: any FileSystem) throws {
        try files.makeDirectory("/var/lib/nodeagent/backups", mode: 0o700)
        let json = JSONValue.object([
            "copy": copy?.json ?? .null, "snapshot": snapshot.map(JSONValue.string) ?? .null,
            "holds": .array(holds.map(JSONValue.string)), "skipped": .array(skipped.map(JSONValue.string)),
            "addedBytes": addedBytes.map { .int(Int($0)) } ?? .null, "processedBytes": processedBytes.map { .int(Int($0)) } ?? .null,
            "check": check?.json ?? .null, "prune": prune?.json ?? .null,
        ])
        try files.write(Self.path, Array((json.jsonText + "\n").utf8), mode: 0o600)
    }

    /// `/status`'s `offsite` object (ages against `now`).
    public func statusJSON(now: Timestamp, repository: String) -> JSONValue {
        func time(_ t: Timestamp?) -> JSONValue { t.map { .string($0.rfc3339) } ?? .null }
        let age: JSONValue = copy?.lastSuccess.map { .double(Double(now.millisecondsSinceEpoch - $0.millisecondsSinceEpoch) / 1000) } ?? .null
        return .object([
            .init("repository", .string(GitURL.redacted(repository))),
            .init("lastSuccess", time(copy?.lastSuccess)), .init("ageSeconds", age), .init("lastAttempt", time(copy?.at)),
            .init("ok", copy.map { .bool($0.ok) } ?? .null), .init("reason", .string(copy?.reason ?? "")), .init("message", .string(copy?.message ?? "")),
            .init("snapshot", snapshot.map(JSONValue.string) ?? .null), .init("holds", .array(holds.map(JSONValue.string))),
            .init("skipped", .array(skipped.map(JSONValue.string))), .init("addedBytes", addedBytes.map { .int(Int($0)) } ?? .null),
            .init("check", check?.json ?? .null), .init("prune", prune?.json ?? .null),
        ])
    }
}

/// What `nodeagent recover` (or `recover: offsite` at the first boot) did:
/// `offsite/recovery.json` under the state directory. Its existence means the question was
/// settled: the daemon never recovers twice.
public struct RecoveryRecord: Sendable, Equatable {
    public enum Outcome: String, Sendable { case recovered, nothing, skipped }

    public static let path = "/var/lib/nodeagent/offsite/recovery.json"
    /// Written before a recovery puts anything in place (the snapshot's id once chosen); while
    /// it exists and `path` does not, no copy leaves the node (it would copy a blank or half
    /// recovered node), and a retry resumes from the same snapshot instead of refusing the
    /// half-recovered node as one that has state.
    public static let underWayPath = "/var/lib/nodeagent/offsite/recovery.under-way"

    public var at: Timestamp
    public var outcome: Outcome
    public var snapshot: String?
    public var steps: [String]
    /// Databases restored from the recovered dumps once the server answers.
    public var pendingDatabases: [String]
    /// The dump each pending database is restored from (the snapshot's newest).
    public var pendingDumps: [String: String] = [:]
    public var restoredDatabases: [String]
    /// Databases that already held tables: left as they were, until a person restores them
    /// (`nodeagent backup restore … --to DB --force` clears the entry).
    public var unrestoredDatabases: [String] = []

    /// The databases no dump may touch while recovered data waits for them.
    public var heldDatabases: Set<String> { Set(pendingDatabases + unrestoredDatabases) }
    /// The last reason a pending database was not restored (yet).
    public var databaseMessage: String?

    public init(at: Timestamp, outcome: Outcome, snapshot: String?, steps: [String], pendingDatabases: [String] = [],
                restoredDatabases: [String] = [], databaseMessage: String? = nil) {
        (self.at, self.outcome, self.snapshot, self.steps) = (at, outcome, snapshot, steps)
        (self.pendingDatabases, self.restoredDatabases, self.databaseMessage) = (pendingDatabases, restoredDatabases, databaseMessage)
    }

    public static func load(_ files: any FileSystem) -> RecoveryRecord? {
        guard let bytes = try? files.read(path), let j = JSONValue.parse(bytes),
              let at = j["at"]?.string.flatMap(Timestamp.init(rfc3339:)), let outcome = j["outcome"]?.string.flatMap(Outcome.init(rawValue:)) else { return nil }
        var r = RecoveryRecord(at: at, outcome: outcome, snapshot: j["snapshot"]?.string, steps: (j["steps"]?.array ?? []).compactMap(\.string),
                               pendingDatabases: (j["pendingDatabases"]?.array ?? []).compactMap(\.string),
                               restoredDatabases: (j["restoredDatabases"]?.array ?? []).compactMap(\.string),
                               databaseMessage: j["databaseMessage"]?.string)
        if case .object(let members)? = j["pendingDumps"] { for m in members { r.pendingDumps[m.key] = m.value.string } }
        r.unrestoredDatabases = (j["unrestoredDatabases"]?.array ?? []).compactMap(\.string)
        return r
    }

    public func save(_ files: any FileSystem) throws {
        try files.makeDirectory("/var/lib/nodeagent/offsite", mode: 0o700)
        try files.write(Self.path, Array((json.jsonText + "\n").utf8), mode: 0o600)
        try files.remove(Self.underWayPath)
    }

    /// A recovery was started and not finished: the snapshot it chose ("" before it chose).
    public static func underWay(_ files: any FileSystem) -> String? {
        guard let bytes = try? files.read(underWayPath) else { return nil }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
    }

    public static func markUnderWay(_ files: any FileSystem, snapshot: String) throws {
        try files.makeDirectory("/var/lib/nodeagent/offsite", mode: 0o700)
        try files.write(underWayPath, Array((snapshot + "\n").utf8), mode: 0o600)
    }

    /// A person restored `database` by hand: it is no longer waiting for one.
    static func resolved(_ database: String, files: any FileSystem) {
        guard var r = load(files), r.unrestoredDatabases.contains(database) || r.pendingDatabases.contains(database) else { return }
        r.unrestoredDatabases.removeAll { $0 == database }
        r.pendingDatabases.removeAll { $0 == database }
        r.restoredDatabases.append(database)
        if r.unrestoredDatabases.isEmpty, r.pendingDatabases.isEmpty { r.databaseMessage = nil }
        try? r.save(files)
    }

    public var json: JSONValue {
        .object([
            .init("at", .string(at.rfc3339)), .init("outcome", .string(outcome.rawValue)), .init("snapshot", snapshot.map(JSONValue.string) ?? .null),
            .init("steps", .array(steps.map(JSONValue.string))), .init("pendingDatabases", .array(pendingDatabases.map(JSONValue.string))),
            .init("pendingDumps", .object(pendingDumps.sorted { $0.key < $1.key }.map { .init($0.key, .string($0.value)) })),
            .init("restoredDatabases", .array(restoredDatabases.map(JSONValue.string))),
            .init("unrestoredDatabases", .array(unrestoredDatabases.map(JSONValue.string))),
            .init("databaseMessage", databaseMessage.map(JSONValue.string) ?? .null),
        ])
    }
}
