import ArgumentParser
import Reconcilers
import YAML

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "PostgreSQL backups now, on demand: run, list, drill, restore (the daemon runs them on their schedules).",
        subcommands: [BackupRun.self, BackupList.self, BackupDrill.self, BackupRestore.self, BackupSnapshot.self]
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

    func backups() throws -> PostgresBackups {
        let platform = try StateOptions.load(state: state, root: root)
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

struct BackupRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Dump every database now (or one), then the roles; rotate; record the result.",
        discussion: "Exit status 0 only when every dump succeeded. A failed dump deletes nothing."
    )

    @OptionGroup var options: BackupOptions

    @Option(name: .long, help: ArgumentHelp("Only this database (one of spec.backups.postgres.databases).", valueName: "NAME"))
    var db: String?

    func run() async throws {
        let backups = try options.backups()
        if let db, !backups.spec.databases.map(\.value).contains(db) {
            Terminal.error("error: --db \(db) is not in spec.backups.postgres.databases (\(backups.spec.databases.map(\.value).joined(separator: ", ")))")
            throw ExitCode.failure
        }
        let results = try await failing { try await backups.backup(only: db.map { [$0] }) }
        for (database, r) in results.sorted(by: { $0.key < $1.key }) {
            print("\(database): \(r.ok ? "ok" : "FAILED \(r.reason)"): \(r.message)")
        }
        if results.values.contains(where: { !$0.ok }) { throw ExitCode.failure }
    }
}

struct BackupList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "The complete dumps, oldest first, per database.")

    @OptionGroup var options: BackupOptions

    @Option(name: .shortAndLong, help: "Output format: text or json.")
    var output: OutputFormat = .text

    func run() async throws {
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
        discussion: "Refuses a database that exists unless --force, which drops and recreates it."
    )

    @OptionGroup var options: BackupOptions

    @Option(name: .long, help: ArgumentHelp("The dump, as `backup list` shows it.", valueName: "FILE"))
    var from: String

    @Option(name: .long, help: ArgumentHelp("The database to restore into.", valueName: "DB"))
    var to: String

    @Flag(name: .long, help: "Replace the database if it exists.")
    var force = false

    func run() async throws {
        let backups = try options.backups()
        try await failing { try await backups.restore(from: from, to: to, replace: force) }
        print("restored \(from) into \(to)")
    }
}

/// Runs a backup step, turning its error into a message and exit status 1.
func failing<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as PostgresError {
        Terminal.error("error: \(error.reason): \(error.message)")
    } catch let error as ReconcileError {
        Terminal.error("error: \(error.reason): \(error.message)")
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
