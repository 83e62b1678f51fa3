import YAML

/// The last provider snapshot nodeagent took or tried: `backups/provider-snapshot.json` under
/// the state directory, for `/metrics`, the schedule and `nodeagent backup snapshot`.
public struct ProviderSnapshotRecord: Sendable, Equatable {
    public static let path = "/var/lib/nodeagent/backups/provider-snapshot.json"

    public var at: Timestamp
    public var ok: Bool
    public var id: String?
    public var reason: String
    public var message: String
    public var lastSuccess: Timestamp?

    public init(at: Timestamp, ok: Bool, id: String?, reason: String, message: String, lastSuccess: Timestamp?) {
        (self.at, self.ok, self.id, self.reason, self.message, self.lastSuccess) = (at, ok, id, reason, message, lastSuccess)
    }

    public static func load(_ files: any FileSystem) -> ProviderSnapshotRecord? {
        guard let bytes = try? files.read(path), let json = JSONValue.parse(bytes),
              let at = json["at"]?.string.flatMap(Timestamp.init(rfc3339:)) else { return nil }
        return ProviderSnapshotRecord(at: at, ok: json["ok"] == .bool(true), id: json["id"]?.string, reason: json["reason"]?.string ?? "",
                                      message: json["message"]?.string ?? "", lastSuccess: json["lastSuccess"]?.string.flatMap(Timestamp.init(rfc3339:)))
    }

    public func save(_ files: any FileSystem) throws {
        let json = JSONValue.object([
            "at": .string(at.rfc3339), "ok": .bool(ok), "id": id.map(JSONValue.string) ?? .null, "reason": .string(reason),
            "message": .string(message), "lastSuccess": lastSuccess.map { .string($0.rfc3339) } ?? .null,
        ])
        try files.write(Self.path, Array((json.jsonText + "\n").utf8), mode: 0o600)
    }
}

extension ProviderSnapshotSpec {
    /// Replaces the VPS's snapshot now and records the outcome (never the credentials).
    /// - Returns: the record written.
    public func takeSnapshot(host: Host, node: String, progress: @Sendable (String) -> Void) async -> ProviderSnapshotRecord {
        let started = host.clock.now()
        let previous = ProviderSnapshotRecord.load(host.files)
        var record: ProviderSnapshotRecord
        var provider: (any SnapshotProvider)?
        do {
            // One backup job at a time on the node: the schedule, an upgrade and the CLI.
            let lock = try BackupLock(files: host.files)
            defer { lock.release() }
            provider = try self.provider(files: host.files, commands: host.commands, clock: host.clock)
            let made = try await provider!.replace(description: "nodeagent \(node) \(started.rfc3339)", progress: progress)
            record = ProviderSnapshotRecord(at: started, ok: true, id: made.id, reason: "Succeeded",
                                            message: "snapshot \(made.id) of \(serviceName)", lastSuccess: host.clock.now())
        } catch let error as ProviderError {
            // A run that deleted the old snapshot and then failed leaves none: say so.
            let remains = provider == nil ? true : ((try? await provider!.current()) ?? nil) != nil
            record = ProviderSnapshotRecord(at: started, ok: false, id: nil, reason: error.reason, message: error.message,
                                            lastSuccess: remains ? previous?.lastSuccess : nil)
        } catch let error as ReconcileError {
            record = ProviderSnapshotRecord(at: started, ok: false, id: nil, reason: error.reason, message: error.message,
                                            lastSuccess: previous?.lastSuccess)
        } catch {
            record = ProviderSnapshotRecord(at: started, ok: false, id: nil, reason: "Error", message: "\(error)", lastSuccess: previous?.lastSuccess)
        }
        try? record.save(host.files)
        return record
    }
}
