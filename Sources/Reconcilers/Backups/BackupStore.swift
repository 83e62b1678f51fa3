import YAML

/// What one dump holds, written beside it as `NAME.json` once the dump is complete and
/// durable: a dump without its manifest is not a backup (it is never listed, restored or
/// counted by the retention).
public struct BackupManifest: Sendable, Equatable {
    public struct Table: Sendable, Equatable {
        public var schema: String
        public var name: String
        /// Counted in the snapshot the dump was taken from.
        public var rows: Int64
    }

    public var database: String
    /// The dump's file name, beside the manifest.
    public var file: String
    public var size: Int64
    public var sha256: String
    public var startedAt: Timestamp
    public var finishedAt: Timestamp
    public var serverVersion: String
    public var pgDumpVersion: String
    public var tables: [Table]

    public var durationSeconds: Double { Double(finishedAt.millisecondsSinceEpoch - startedAt.millisecondsSinceEpoch) / 1000 }

    var json: JSONValue {
        .object([
            "database": .string(database), "file": .string(file), "size": .int(Int(size)), "sha256": .string(sha256),
            "startedAt": .string(startedAt.rfc3339Milliseconds), "finishedAt": .string(finishedAt.rfc3339Milliseconds),
            "durationSeconds": .double(durationSeconds), "serverVersion": .string(serverVersion),
            "pgDumpVersion": .string(pgDumpVersion),
            "tables": .array(tables.map { .object(["schema": .string($0.schema), "name": .string($0.name), "rows": .int(Int($0.rows))]) }),
        ])
    }

    init(database: String, file: String, size: Int64, sha256: String, startedAt: Timestamp, finishedAt: Timestamp,
         serverVersion: String, pgDumpVersion: String, tables: [Table]) {
        (self.database, self.file, self.size, self.sha256) = (database, file, size, sha256)
        (self.startedAt, self.finishedAt, self.serverVersion, self.pgDumpVersion, self.tables) = (startedAt, finishedAt, serverVersion, pgDumpVersion, tables)
    }

    init?(_ bytes: [UInt8]) {
        guard let j = JSONValue.parse(bytes), let database = j["database"]?.string, let file = j["file"]?.string,
              let size = j["size"]?.int, let sha = j["sha256"]?.string,
              let started = j["startedAt"]?.string.flatMap(Timestamp.init(rfc3339:)),
              let finished = j["finishedAt"]?.string.flatMap(Timestamp.init(rfc3339:)) else { return nil }
        self.init(database: database, file: file, size: Int64(size), sha256: sha, startedAt: started, finishedAt: finished,
                  serverVersion: j["serverVersion"]?.string ?? "", pgDumpVersion: j["pgDumpVersion"]?.string ?? "",
                  tables: (j["tables"]?.array ?? []).compactMap { t in
                      guard let s = t["schema"]?.string, let n = t["name"]?.string, let r = t["rows"]?.int else { return nil }
                      return Table(schema: s, name: n, rows: Int64(r))
                  })
    }
}

/// The dump directory: `DIR/DATABASE/DATABASE-20261126T030000.000Z.dump` with its `.json`
/// manifest; `DIR/globals/globals-…sql` for roles; dumps in progress as `.partial-…` files
/// that are never listed and are removed by the next run.
public struct BackupStore: Sendable {
    public let directory: String
    let files: any FileSystem

    public init(directory: String, files: any FileSystem) {
        self.directory = directory
        self.files = files
    }

    public struct Entry: Sendable, Equatable {
        public var manifest: BackupManifest
        /// The dump's path on the node.
        public var path: String
    }

    func folder(_ database: String) -> String { "\(directory)/\(database)" }

    /// `20261126T030000.123Z`: sorts by time, and two runs in one second do not collide.
    static func stamp(_ t: Timestamp) -> String {
        t.rfc3339Milliseconds.filter { $0 != "-" && $0 != ":" }
    }

    /// The complete dumps of a database, oldest first: a manifest whose dump exists.
    public func list(_ database: String) throws -> [Entry] {
        let dir = folder(database)
        let names = try files.list(dir) ?? []
        var out: [Entry] = []
        for name in names where name.hasSuffix(".json") && !name.hasPrefix(".") {
            guard let bytes = try files.read("\(dir)/\(name)"), let manifest = BackupManifest(bytes),
                  manifest.database == database, names.contains(manifest.file) else { continue }
            out.append(Entry(manifest: manifest, path: "\(dir)/\(manifest.file)"))
        }
        return out.sorted { $0.manifest.startedAt < $1.manifest.startedAt }
    }

    /// Removes what a run interrupted (a `kill -9`, a crash) left: partial dumps, and a dump
    /// whose manifest never got written. Called with the backup lock held.
    func removeLeftovers(_ database: String) throws -> [String] {
        let dir = folder(database)
        let names = try files.list(dir) ?? []
        let listed = Set(try list(database).map(\.manifest.file))
        var removed: [String] = []
        for name in names where name.hasPrefix(".partial-") || (name.hasSuffix(".dump") && !listed.contains(name)) {
            try files.remove("\(dir)/\(name)")
            removed.append(name)
        }
        return removed
    }

    /// Keeps the newest `keep` complete dumps and deletes the rest (manifest first, so a crash
    /// in between leaves a leftover dump, never a listed dump without its file).
    /// Only called after a successful dump, which is never deleted (`protect`), whatever the
    /// clock said when older dumps were stamped.
    func rotate(_ database: String, keep: Int, protect: String) throws -> [String] {
        let entries = try list(database).filter { $0.manifest.file != protect }
        guard entries.count > keep - 1, keep >= 1 else { return [] }
        var removed: [String] = []
        for entry in entries.dropLast(keep - 1) {
            let base = String(entry.manifest.file.dropLast(".dump".count))
            try files.remove("\(folder(database))/\(base).json")
            try files.remove(entry.path)
            removed.append(entry.manifest.file)
        }
        return removed
    }

    /// The newest `keep` roles dumps stay; older ones go.
    func rotateGlobals(keep: Int) throws {
        let names = (try files.list("\(directory)/globals") ?? []).filter { $0.hasPrefix("globals-") && $0.hasSuffix(".sql") }
        for name in names.dropLast(max(keep, 1)) { try files.remove("\(directory)/globals/\(name)") }
    }
}

extension Timestamp {
    /// With milliseconds: `2026-11-26T03:00:00.123Z`.
    var rfc3339Milliseconds: String {
        let base = rfc3339
        let ms = ((millisecondsSinceEpoch % 1000) + 1000) % 1000
        return String(base.dropLast()) + "." + String(String(ms + 1000).dropFirst()) + "Z"
    }
}
