import ArgumentParser
import Reconcilers
import YAML

struct SourceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "source",
        abstract: "Fetch the desired state from Git as the agent would, and say whether it would be applied.",
        discussion: "Exit status 0 when the revision is fetched, verified and valid; 1 otherwise, with the reason."
    )

    @Option(name: .long, help: ArgumentHelp("The agent config.", valueName: "FILE"))
    var config = AgentConfig.defaultPath

    @Option(name: .shortAndLong, help: "Output format: text or json.")
    var output: OutputFormat = .text

    func run() async throws {
        let agent = try AgentConfig.loadForCommand(path: config)
        let source = GitSource(config: agent.source, mirror: agent.stateDirectory.value + "/source.git", commands: SystemCommandRunner())
        let applied = try? await source.appliedCommit()
        do {
            let revision = try await source.fetch()
            let fields: JSONValue = .object([
                "repo": .string(agent.source.repo), "ref": .string(agent.source.ref), "commit": .string(revision.commit),
                "applied": applied.map(JSONValue.string) ?? .null, "name": .string(revision.platform.name.value),
                "verified": .bool(agent.source.allowedSignersFile != nil), "valid": .bool(true),
            ])
            if output == .json {
                print(fields.jsonText)
            } else {
                print("\(agent.source.repo) \(agent.source.ref) → \(revision.commit.prefix(12))"
                      + (agent.source.allowedSignersFile != nil ? " (signature verified)" : "")
                      + ": \(agent.source.path) is valid (\(revision.platform.name))"
                      + (applied == revision.commit ? "; already applied" : applied.map { "; applied is \($0.prefix(12))" } ?? "; nothing applied yet"))
            }
        } catch {
            if output == .json {
                print(JSONValue.object(["reason": .string(error.reason.rawValue), "commit": error.commit.map(JSONValue.string) ?? .null,
                                        "message": .string(error.message), "errors": .array(error.diagnostics.map(\.json))]).jsonText)
            } else {
                Terminal.error("error: \(error)")
            }
            throw ExitCode.failure
        }
    }
}
