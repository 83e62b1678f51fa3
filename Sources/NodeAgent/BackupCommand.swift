import ArgumentParser
import Reconcilers
import YAML

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Backups now, on demand: run, list, drill, restore, the off-site copy's check and prune (the daemon runs them on their schedules).",
        subcommands: [BackupRunCommand.self, BackupList.self, BackupDrill.self, BackupRestore.self, BackupCheck.self, BackupPrune.self, BackupInit.self, BackupSnapshot.self]
    )
}

/// Options every backup command shares.
struct BackupOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The desired-state file (default: the revision the agent last applied, \(StateOptions.lastApplied)).",
                                            valueName: "FILE"))
    var state: String?

    @Option(name: .long, help: ArgumentHelp("For an in-cluster database: the cluster's kubeconfig (default: \(PassOptions.defaultKubeconfig) under --root).",
                                            valueName: "FILE"))
    var kubeconfig: String?

    @Option(name: .long, help: ArgumentHelp("Directory that stands for / on the node (for tests).", valueName: "DIR"))
    var root: String = "/"

    func platform() throws -> Platform { try StateOptions.load(state: state, root: root) }

    func offsite() throws -> OffsiteBackups {
        let platform = try platform()
        guard let offsite = OffsiteBackups(platform: platform, host: Host.node(root: root), log: { Terminal.error($0) }) else {
            Terminal.error("error: the desired state declares no spec.backups.offsite")
            throw ExitCode.failure
        }
        return offsite
    }

    func backups() throws -> PostgresBackups {
        let platform = try platform()
        let host = Host.node(root: root)
        guard let backups = PostgresBackups(platform: platform, host: host, cluster: PassOptions(kubeconfig: kubeconfig).cluster(on: host),
                                            log: { Terminal.error($0) }) else {
            Terminal.error("error: the desired state declares no spec.backups.postgres")
            throw ExitCode.failure
        }
        return backups
    }
}

struct BackupSnapshot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Replace the VPS's provider snapshot with a fresh one now (spec.backups.providerSnapshot).",
        discussion: "A VPS keeps one snapshot: the previous one is deleted first, then a new one is made; each waits for its task. Exit status 0 only when the new snapshot exists."
    )

    @OptionGroup var options: BackupOptions

    func run() async throws {
        let platform = try StateOptions.load(state: options.state, root: options.root)
        guard let spec = platform.spec.backups?.providerSnapshot else {
            Terminal.error("error: the desired state declares no spec.backups.providerSnapshot")
            throw ExitCode.failure
        }
        let record = await spec.takeSnapshot(host: Host.node(root: options.root), node: platform.name.value) { Terminal.error($0) }
        guard record.ok else {
            Terminal.error("error: \(record.reason): \(TerminalText.sanitised(record.message))")
            throw ExitCode.failure
        }
        print("\(record.message): taken \(record.at.rfc3339)")
    }
}

struct BackupRunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Dump every database now (or one), then the roles; rotate; record; then copy everything off the node (spec.backups.offsite).",
        discussion: "Exit status 0 only when every dump and the off-site copy succeeded. A failed dump deletes nothing; the off-site copy runs whatever the dumps did."
    )

    @OptionGroup var options: BackupOptions

    @Option(name: .long, help: ArgumentHelp("Only this database (one of spec.backups.postgres.databases).", valueName: "NAME"))
    var db: String?

    func run() async throws {
        let platform = try options.platform()
        let host = Host.node(root: options.root)
        guard platform.spec.backups?.postgres != nil || platform.spec.backups?.offsite != nil else {
            Terminal.error("error: the desired state declares neither spec.backups.postgres nor spec.backups.offsite")
            throw ExitCode.failure
        }
        if let db {
            let declared = platform.spec.backups?.postgres?.databases.map(\.value) ?? []
            guard declared.contains(db) else {
                Terminal.error("error: --db \(db) is not in spec.backups.postgres.databases (\(declared.joined(separator: ", ")))")
                throw ExitCode.failure
            }
        }
        let result = try await failing {
            try await BackupRun.run(platform: platform, host: host, cluster: PassOptions(kubeconfig: options.kubeconfig).cluster(on: host),
                                    only: db.map { [$0] }, log: { Terminal.error($0) })
        }
        for (database, r) in result.databases.sorted(by: { $0.key < $1.key }) {
            print("\(database): \(r.ok ? "ok" : "FAILED \(r.reason)"): \(r.message)")
        }
        if let why = result.dumpsNotRun { print("dumps: NOT RUN \(TerminalText.sanitised(why))") }
        if let why = result.copyNotRun { print("offsite: NOT RUN \(TerminalText.sanitised(why))") }
        if result.copyNotRun == nil, let copy = result.offsite?.copy {
            print("offsite: \(copy.ok ? "ok" : "FAILED \(copy.reason)"): \(TerminalText.sanitised(copy.message))")
            if copy.ok, let skipped = result.offsite?.skipped, !skipped.isEmpty { print("offsite: skipped: \(skipped.joined(separator: "; "))") }
        }
        if !result.ok { throw ExitCode.failure }
    }
}

struct BackupList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "The complete dumps, oldest first, per database.")

    @OptionGroup var options: BackupOptions

    @Option(name: .shortAndLong, help: "Output format: text or json.")
    var output: OutputFormat = .text

    @Flag(name: .long, help: "The off-site repository's snapshots of this node instead (spec.backups.offsite).")
    var offsite = false

    func listOffsite() async throws {
        let offsite = try options.offsite()
        let snapshots = try await failing { try await offsite.list() }
        switch output {
        case .json:
            print(JSONValue.array(snapshots.map { s in
                .object([.init("id", .string(s.id)), .init("taken", .string(s.time.rfc3339)), .init("host", .string(s.hostname)),
                         .init("holds", .array(s.tagged("holds").map(JSONValue.string))), .init("databases", .array(s.tagged("db").map(JSONValue.string))),
                         .init("tags", .array(s.tags.map(JSONValue.string)))])
            }).jsonText)
        case .text:
            if snapshots.isEmpty { print("No off-site snapshot of node \(offsite.node) yet."); return }
            let rows = [["SNAPSHOT", "TAKEN", "HOLDS", "DATABASES"]]
                + snapshots.map { [$0.shortID, $0.time.rfc3339, $0.tagged("holds").joined(separator: ","), $0.tagged("db").joined(separator: ",")] }
            let widths = (0..<4).map { i in rows.map { $0[i].count }.max() ?? 0 }
            for row in rows { print(row.enumerated().map { i, c in i == 3 ? c : c.padding(to: widths[i]) }.joined(separator: "  ")) }
        }
    }

    func run() async throws {
        if offsite { return try await listOffsite() }
        let backups = try options.backups()
        var rows: [[String]] = [["DATABASE", "FILE", "SIZE", "TAKEN", "SECONDS", "TABLES", "SHA256"]]
        var json: [JSONValue] = []
        for database in backups.spec.databases.map(\.value) {
            for entry in try failing({ try backups.store.list(database) }) {
                let m = entry.manifest
                rows.append([database, entry.path, String(m.size), m.startedAt.rfc3339, String(format2(m.durationSeconds)),
                             String(m.tables.count), String(m.sha256.prefix(12))])
                json.append(.object(["database": .string(database), "path": .string(entry.path), "size": .int(Int(m.size)),
                                     "taken": .string(m.startedAt.rfc3339), "durationSeconds": .double(m.durationSeconds),
                                     "sha256": .string(m.sha256), "serverVersion": .string(m.serverVersion),
                                     "tables": .array(m.tables.map { .object(["schema": .string($0.schema), "name": .string($0.name),
                                                                               "rows": .int(Int($0.rows))]) })]))
            }
        }
        switch output {
        case .json: print(JSONValue.array(json).jsonText)
        case .text:
            if rows.count == 1 { print("No backups yet."); return }
            let widths = (0..<rows[0].count).map { i in rows.map { $0[i].count }.max() ?? 0 }
            for row in rows {
                print(row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(to: widths[i]) }.joined(separator: "  "))
            }
        }
    }

    func format2(_ d: Double) -> String {
        let centi = Int((d * 100).rounded())
        return "\(centi / 100).\(String(100 + centi % 100).dropFirst())"
    }
}

struct BackupDrill: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drill",
        abstract: "Restore the newest dump of each database into a scratch database and verify it.",
        discussion: "Checks the checksum first, then every table's row count against the manifest; drops the scratch database whatever happens. Exit status 0 only when verified."
    )

    @OptionGroup var options: BackupOptions

    func run() async throws {
        let backups = try options.backups()
        let result = try await failing { try await backups.drill() }
        print("drill: \(result.ok ? "verified" : "FAILED \(result.reason)"): \(result.message)")
        if !result.ok { throw ExitCode.failure }
    }
}

struct BackupRestore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore one dump into a database (its checksum is verified first).",
        discussion: "--from is a dump as `backup list` shows it, or offsite:DB (the newest off-site dump of DB) or offsite:DB@SNAPSHOT. Refuses a database that exists unless --force, which drops and recreates it."
    )

    @OptionGroup var options: BackupOptions

    @Option(name: .long, help: ArgumentHelp("The dump, as `backup list` shows it; or offsite:DB[@SNAPSHOT].", valueName: "FILE"))
    var from: String

    @Option(name: .long, help: ArgumentHelp("The database to restore into.", valueName: "DB"))
    var to: String

    @Flag(name: .long, help: "Replace the database if it exists.")
    var force = false

    func run() async throws {
        let backups = try options.backups()
        if from.hasPrefix("offsite:") {
            let ref = from.dropFirst("offsite:".count)
            let database = String(ref.prefix { $0 != "@" })
            let snapshot = ref.contains("@") ? String(ref.drop { $0 != "@" }.dropFirst()) : nil
            guard !database.isEmpty, snapshot.map({ !$0.isEmpty && $0.allSatisfy(\.isHexDigit) }) ?? true else {
                Terminal.error("error: --from offsite:DB or offsite:DB@SNAPSHOT (a snapshot id from backup list --offsite)")
                throw ExitCode.failure
            }
            let what = try await failing { try await backups.restoreFromOffsite(database, snapshot: snapshot, to: to, replace: force) }
            print("restored \(what) into \(to)")
            return
        }
        try await failing { try await backups.restore(from: from, to: to, replace: force) }
        print("restored \(from) into \(to)")
    }
}

struct BackupCheck: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check the off-site repository now (restic check, with check.readDataSubset of the data read back).",
        discussion: "Exit status 0 only when the repository is sound. The result goes to /status and /metrics like a scheduled check's."
    )

    @OptionGroup var options: BackupOptions

    func run() async throws {
        let record = await try options.offsite().check()
        try report("check", record, record.check)
    }
}

struct BackupPrune: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Remove the data of forgotten snapshots from the off-site repository now (restic prune)."
    )

    @OptionGroup var options: BackupOptions

    func run() async throws {
        let record = await try options.offsite().prune()
        try report("prune", record, record.prune)
    }
}

struct BackupInit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create the off-site restic repository now (spec.backups.offsite).",
        discussion: "The first copy creates it too; a repository that held this node's copies and is gone is not created again by a copy, only by this command. Exit status 0 when it was created."
    )

    @OptionGroup var options: BackupOptions

    func run() async throws {
        let offsite = try options.offsite()
        try await failing { try await offsite.initialize() }
        print("created the off-site repository \(GitURL.redacted(offsite.spec.repository))")
    }
}

/// Prints an off-site step's outcome (`check: ok: …`); exit status 1 unless it succeeded.
func report(_ name: String, _ record: OffsiteRecord, _ step: OffsiteRecord.Step?) throws {
    if let why = record.notRun {
        print("\(name): NOT RUN \(TerminalText.sanitised(why))")
        throw ExitCode.failure
    }
    guard let step else { throw ExitCode.failure }
    print("\(name): \(step.ok ? "ok" : "FAILED \(step.reason)"): \(TerminalText.sanitised(step.message))")
    if !step.ok { throw ExitCode.failure }
}

/// Runs a backup step, turning its error into a message and exit status 1.
func failing<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as PostgresError {
        Terminal.error("error: \(error.reason): \(error.message)")
    } catch let error as ReconcileError {
        Terminal.error("error: \(error.reason): \(error.message)")
    } catch let error as OffsiteError {
        Terminal.error("error: \(error.reason): \(TerminalText.sanitised(error.message))")
    } catch {
        Terminal.error("error: \(error)")
    }
    throw ExitCode.failure
}

func failing<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch {
        Terminal.error("error: \(error)")
        throw ExitCode.failure
    }
}

extension String {
    func padding(to width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
