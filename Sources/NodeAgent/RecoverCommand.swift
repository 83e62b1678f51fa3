import ArgumentParser
import Reconcilers
import YAML

struct RecoverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recover",
        abstract: "Rebuild this node from its off-site copy (spec.backups.offsite): secrets, K3s's datastore and token, the applied revision, the dumps.",
        discussion: """
            Run it on a replacement node before nodeagent's first pass (agent.yaml's `recover: offsite` does it by itself at the first boot). \
            It refuses a node that already has state (an applied revision, a K3s datastore, a WireGuard key) unless --force. The databases are \
            restored from the recovered dumps as soon as PostgreSQL answers (now if it does, else by the daemon). Exit status 0 when the node \
            was recovered or the repository holds nothing of it.
            """
    )

    @Flag(name: .long, help: "Restore from the off-site repository (the only source there is).")
    var fromOffsite = false

    @Flag(name: .long, help: "Replace the state this node already has.")
    var force = false

    @Option(name: .long, help: ArgumentHelp("This snapshot (an id from backup list --offsite) instead of the newest.", valueName: "ID"))
    var snapshot: String?

    @OptionGroup var options: BackupOptions

    func validate() throws {
        guard fromOffsite else { throw ValidationError("say where from: --from-offsite") }
        if let snapshot, snapshot.isEmpty || !snapshot.allSatisfy(\.isHexDigit) { throw ValidationError("--snapshot takes a snapshot id (hexadecimal)") }
    }

    func run() async throws {
        let offsite = try options.offsite()
        let record = try await failing {
            try await NodeRecovery(offsite: offsite).recover(force: force, snapshot: snapshot) { print($0) }
        }
        guard record.outcome == .recovered else { return }
        if !record.pendingDatabases.isEmpty, let backups = try? options.backups() {
            if let after = await backups.restorePendingDatabases() {
                for db in after.restoredDatabases { print("database \(db): restored") }
                if !after.pendingDatabases.isEmpty {
                    print("databases \(after.pendingDatabases.joined(separator: ", ")): not yet (\(after.databaseMessage ?? "PostgreSQL does not answer")); "
                          + "the daemon restores them once it does")
                }
            }
        }
        print("recovered node \(offsite.node) from off-site snapshot \(record.snapshot ?? "?"); start nodeagent (systemctl start nodeagent) to bring it up")
    }
}
