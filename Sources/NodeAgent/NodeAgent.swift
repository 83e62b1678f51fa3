import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

/// The `nodeagent` command line.
@main
struct NodeAgent: AsyncParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "nodeagent",
        abstract: "Turns one Debian VPS into a secure, observable, restorable single-node K3s platform, and keeps it converged.",
        discussion: """
            Exit codes: 0 success (plan: nothing to do), 1 error or invalid input, 2 plan: changes pending.
            """,
        version: NodeAgent.version,
        subcommands: [InitCommand.self, Validate.self, Plan.self, Apply.self, Render.self, BackupCommand.self, RecoverCommand.self, AlertsCommand.self, Run.self, StatusCommand.self, Confirm.self, SourceCommand.self, WireGuardCommand.self, KubeCommand.self, K3sCommand.self, Version.self]
    )

    /// Like ArgumentParser's, except that a usage error exits 1, not 64: every command
    /// documents 1 as "error" (and `plan` keeps 2 for "changes pending").
    static func main() async {
        // A write to a pipe or socket whose reader is gone must fail with EPIPE, not kill the
        // agent. (Command input no longer goes through a pipe: see SystemCommandRunner.) Children
        // start with every signal at its default again (swift-subprocess resets them).
        signal(SIGPIPE, SIG_IGN)
        var command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            if exitCode(for: error) == .validationFailure {
                Terminal.error(fullMessage(for: error))
                Glibc.exit(1)
            }
            exit(withError: error)
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as ValidationError {
            // Found while running, not while parsing: the usage would not help.
            Terminal.error("Error: \(error.message)")
            Glibc.exit(1)
        } catch {
            exit(withError: error)
        }
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version.")

    func run() {
        print("nodeagent \(NodeAgent.version)")
    }
}

/// How data is printed: for people, or as JSON for machines.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}
